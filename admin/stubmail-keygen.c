/* stubmail-keygen — create (or find) a domain's OpenPGP key and say what to
 * publish.
 *
 * SYNOPSIS
 *   stubmail-keygen -g GNUPGHOME -d DOMAIN [-o PUBLIC_KEY_FILE] [-u OUTBOX_URL]
 *                   [-U UDP_ADDRESS]
 *
 * DESCRIPTION
 *   Makes the domain key stubmail@DOMAIN in GNUPGHOME (ed25519/cv25519, no
 *   passphrase) unless one exists, writes its ASCII-armored public key to
 *   PUBLIC_KEY_FILE (what mod_stubmail serves at /v1/key), and prints the
 *   fingerprint and the _stubmail TXT record to publish. Running it again
 *   changes nothing and prints the same. With -U IP:PORT (or [IPv6]:PORT:
 *   pollerd's udp_listen) the record gets udp=, where senders' UDP stubs go.
 *
 * DIAGNOSTICS
 *   Exit 0 on success, 64 on bad usage, 1 when gpg failed (the reason is
 *   printed).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sm_addr.h"
#include "sm_txt.h"
#include "sm_pgp.h"

static void usage(void)
{
    fprintf(stderr, "usage: stubmail-keygen -g GNUPGHOME -d DOMAIN [-o PUBLIC_KEY_FILE] "
                    "[-u OUTBOX_URL] [-U UDP_IP:PORT]\n");
    exit(64);
}

static int write_file(const char *path, const char *data, size_t len)
{
    char tmp[4096];
    FILE *fp;
    int n = snprintf(tmp, sizeof tmp, "%s.tmp", path);

    if (n < 0 || (size_t)n >= sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if ((fp = fopen(tmp, "w")) == NULL)
        return -1;
    if (fwrite(data, 1, len, fp) != len || fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
        fclose(fp);
        unlink(tmp);
        return -1;
    }
    if (fclose(fp) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *home = NULL, *domain = NULL, *outfile = NULL, *url = NULL, *udp = NULL;
    const char *bad = "";
    char fpr[SM_PGP_FPR_MAX + 1], why[512], policy[32], udptag[SM_TXT_UDP_MAX + 8] = "";
    struct sockaddr_storage ss;
    socklen_t sslen;
    char *key = NULL;
    size_t keylen;
    int c, rc = 1;

    while ((c = getopt(argc, argv, "g:d:o:u:U:")) != -1) {
        switch (c) {
        case 'g': home = optarg; break;
        case 'd': domain = optarg; break;
        case 'o': outfile = optarg; break;
        case 'u': url = optarg; break;
        case 'U': udp = optarg; break;
        default: usage();
        }
    }
    if (home == NULL || domain == NULL || optind != argc)
        usage();
    if (!sm_domain_valid(domain)) {
        fprintf(stderr, "stubmail-keygen: \"%s\" is not a domain name\n", domain);
        return 64;
    }
    if (udp) {
        /* the rules of udp= itself: what does not parse here, peers refuse */
        if (strlen(udp) > SM_TXT_UDP_MAX || sm_dns_resolver_parse(udp, &ss, &sslen, &bad) != 0) {
            fprintf(stderr, "stubmail-keygen: -U \"%s\": %s\n", udp, bad[0] ? bad : "too long");
            return 64;
        }
        snprintf(udptag, sizeof udptag, "udp=%s; ", udp);
    }
    if (sm_pgp_create_domain_key(home, domain, fpr, why, sizeof why) != 0) {
        fprintf(stderr, "stubmail-keygen: %s: domain key for %s: %s\n", home, domain, why);
        goto leave;
    }
    if (outfile) {
        if (sm_pgp_export_public(home, fpr, &key, &keylen, why, sizeof why) != 0) {
            fprintf(stderr, "stubmail-keygen: exporting %s: %s\n", fpr, why);
            goto leave;
        }
        if (write_file(outfile, key, keylen) != 0) {
            fprintf(stderr, "stubmail-keygen: %s: %s\n", outfile, strerror(errno));
            goto leave;
        }
    }
    /* A policy id only has to change when the record does; the date of the
     * run that printed it is a readable choice. */
    strftime(policy, sizeof policy, "%Y%m%d01", gmtime(&(time_t){ time(NULL) }));
    printf("fingerprint %s\n", fpr);
    if (url)
        printf("publish     _stubmail.%s. IN TXT \"v=stubmail1; outbox=%s; %sfpr=%s; policy=%s\"\n",
               domain, url, udptag, fpr, policy);
    else
        printf("publish     _stubmail.%s. IN TXT \"v=stubmail1; outbox=https://stubmail.%s/stubmail; "
               "%sfpr=%s; policy=%s\"\n", domain, domain, udptag, fpr, policy);
    rc = 0;
leave:
    free(key);
    sm_pgp_stop_agent(home, why, sizeof why);
    return rc;
}
