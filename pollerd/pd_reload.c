/*
 * NAME
 *	pd_reload - SIGHUP: check the configuration file, then start again
 *
 * DESCRIPTION
 *	A configuration reaches every part of pollerd (the session and its
 *	token, the UDP sockets, the seal's keys, the database connection), so
 *	a reload is a start of the same program with the same arguments, by
 *	execv of /proc/self/exe, at a moment when nothing is in flight: the
 *	event loop (stubmail-pollerd.c) asks for it only between cycles, with
 *	no digest being sent and every delivery recorded in the database.
 *	Before that, the file is checked by the program itself (-n, in a
 *	child): a bad file is refused with its first error line, and pollerd
 *	goes on with what it has. The started program learns from
 *	PD_REEXEC_ENV that it is a daemon already (no second fork, the same
 *	pid).
 *
 * DIAGNOSTICS
 *	The check's error line; an execv that fails (the program is gone):
 *	the caller logs it and exits, as at a start that fails.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sm_log.h"
#include "pd.h"

#define PD_SELF "/proc/self/exe"

int pd_reload_check(const char *conf_path, char *why, size_t whylen)
{
    int fd[2] = { -1, -1 }, status = 0, rc = -1;
    char line[512] = "", drain[512];
    size_t have = 0;
    ssize_t n;
    pid_t pid;

    if (pipe(fd) != 0) {
        sm_why(why, whylen, "cannot check it: pipe: %s", strerror(errno));
        goto leave;
    }
    if ((pid = fork()) < 0) {
        sm_why(why, whylen, "cannot check it: fork: %s", strerror(errno));
        goto leave;
    }
    if (pid == 0) {
        dup2(fd[1], 1);
        dup2(fd[1], 2);
        close(fd[0]);
        close(fd[1]);
        execl(PD_SELF, "stubmail-pollerd", "-n", "-c", conf_path, (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    fd[1] = -1;
    /* read to the end, whatever happens: a child left writing into a full
     * pipe would never exit, and the waitpid below would wait for ever.
     * The first line is the check's verdict; the rest is drained. */
    for (;;) {
        if (have < sizeof line - 1)
            n = read(fd[0], line + have, sizeof line - 1 - have);
        else
            n = read(fd[0], drain, sizeof drain);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (have < sizeof line - 1)
            have += (size_t)n;
    }
    line[have] = '\0';
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    line[strcspn(line, "\n")] = '\0';
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        sm_why(why, whylen, "%s", line[0] ? line : "the check failed");
        goto leave;
    }
    rc = 0;
leave:
    if (fd[0] >= 0)
        close(fd[0]);
    if (fd[1] >= 0)
        close(fd[1]);
    return rc;
}

void pd_reload_exec(char **argv)
{
    setenv(PD_REEXEC_ENV, "1", 1);
    execv(PD_SELF, argv);
}
