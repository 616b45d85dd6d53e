/* sm_txt — the _stubmail TXT record: its grammar, parser and canonical form.
 *
 * A domain that pulls its mail publishes one TXT record at _stubmail.<domain>:
 *
 *   v=stubmail1; outbox=https://stubmail.b.example/stubmail; udp=127.0.0.3:20090;
 *   fpr=0123456789ABCDEF0123456789ABCDEF01234567; policy=2026112601
 *
 * Grammar (ABNF, RFC 5234; DKIM-style tag list, RFC 6376 3.2):
 *
 *   record     = version *( ";" tag-spec ) [ ";" *WSP ]
 *   version    = *WSP "v" *WSP "=" *WSP "stubmail1" *WSP
 *   tag-spec   = *WSP tag-name *WSP "=" *WSP tag-value *WSP
 *   tag-name   = %x61-7A *( %x61-7A / DIGIT / "-" )   ; [a-z][a-z0-9-]*
 *   tag-value  = *( %x21-3A / %x3C-7E )               ; visible ASCII but ";"
 *   WSP        = SP / HTAB
 *
 *   - At most 1024 octets; every octet is %x20-7E or HTAB (no CR, LF, NUL,
 *     other controls or 8-bit octets anywhere).
 *   - A value has no blanks inside: "policy=a b" is refused, not truncated.
 *   - Every tag appears at most once, unknown ones too; "v" only first.
 *   - Unknown tags are syntax-checked and otherwise ignored, so later
 *     revisions can add tags without breaking this one.
 *   - Tag names and "stubmail1" are case-sensitive.
 *
 *   outbox  (required) absolute URL, at most 512 octets:
 *           ("http" / "https") "://" host [ ":" port ] [ path ] [ "?" query ]
 *           scheme in lowercase; host a DNS name (letters, digits, hyphens,
 *           labels 1-63, at most 253, no trailing dot; if the last label is
 *           all digits it must be a dotted-quad IPv4 address) or "[" IPv6 "]";
 *           no userinfo ("@" before the path), no fragment ("#"); path and
 *           query only RFC 3986 pchar / "/" / "?" ("%" followed by two hex
 *           digits). Whether http:// is acceptable is the caller's policy.
 *   fpr     (required) 40 or 64 hex digits, either case (stored uppercase):
 *           the OpenPGP fingerprint of the domain key.
 *   policy  (required) 1*64( ALPHA / DIGIT / "." / "_" / "-" ): changes
 *           whenever anything in the record (or the key) changes.
 *   fpr-alt (optional) like fpr: a second domain key, valid too while the
 *           domain rotates its key (docs/PROTOCOL.md "Key rotation").
 *   udp     (optional) IPv4 ":" port  /  "[" IPv6 "]" ":" port, where the
 *           UDP stubs go. No host names. port = 1-65535 in decimal without
 *           leading zeros. Unspecified (0.0.0.0, ::), multicast and
 *           255.255.255.255 are refused.
 */
#ifndef SM_TXT_H
#define SM_TXT_H

#include <stddef.h>
#include <sys/socket.h>

#define SM_TXT_MAX         1024  /* octets in one record */
#define SM_TXT_URL_MAX      512
#define SM_TXT_UDP_MAX       53  /* "[" 45-char IPv6 "]:" 5-digit port */
#define SM_TXT_FPR_MAX       64
#define SM_TXT_POLICY_MAX    64

typedef struct sm_txt_record {
    char outbox[SM_TXT_URL_MAX + 1];   /* exactly as published */
    int outbox_https;                  /* 1: https://, 0: http:// */
    char udp[SM_TXT_UDP_MAX + 1];      /* canonical "192.0.2.1:20090" or
                                          "[2001:db8::1]:20090"; "" if none */
    struct sockaddr_storage udp_addr;  /* the same, ready for sendto() */
    socklen_t udp_addrlen;             /* 0 if no udp= tag */
    char fpr[SM_TXT_FPR_MAX + 1];      /* 40 or 64 uppercase hex digits */
    char fpr_alt[SM_TXT_FPR_MAX + 1];  /* the same, or "" if no fpr-alt= tag */
    char policy[SM_TXT_POLICY_MAX + 1];
} sm_txt_record;

/* Parse one record (len octets, not NUL-terminated, may contain NULs).
 * Returns 0 with *rec filled, or -1 with a reason in *why (static string);
 * on failure *rec is zeroed. */
int sm_txt_parse(const char *txt, size_t len, sm_txt_record *rec, const char **why);

/* 1 if the text is a stubmail record by the rule above (may still be
 * invalid), else 0: the test that decides which TXT records are ours. */
int sm_txt_is_stubmail(const char *txt, size_t len);

/* The canonical form of a parsed record ("v=stubmail1; outbox=...; udp=...;
 * fpr=...; fpr-alt=...; policy=..."; udp and fpr-alt omitted when absent),
 * for logs and tests; it parses back to the same record. Returns its length, or -1 if outlen is too
 * small (SM_TXT_MAX + 1 is always enough). */
int sm_txt_format(const sm_txt_record *rec, char *out, size_t outlen);

/* Parse a resolver setting "IPv4:port" or "[IPv6]:port" (the same rules as
 * udp=). Returns 0, or -1 with a reason in *why. For configuration checks. */
int sm_dns_resolver_parse(const char *s, struct sockaddr_storage *addr, socklen_t *addrlen,
                          const char **why);

#endif
