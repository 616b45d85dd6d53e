/* sm_addr — mail address and domain handling shared by every component. */
#ifndef SM_ADDR_H
#define SM_ADDR_H

#include <stddef.h>

#define SM_ADDR_MAX   320   /* octets, without the terminating NUL */
#define SM_DOMAIN_MAX 253

/* Normalise an address as seen on the wire or in an SMTP envelope: strip one
 * pair of surrounding angle brackets and surrounding blanks, check the syntax
 * of docs/PROTOCOL.md ("Address"), lowercase it. Writes at most outlen bytes
 * including the NUL. Returns 0, or -1 with a reason in *why (static string). */
int sm_addr_normalize(const char *in, char *out, size_t outlen, const char **why);

/* Like sm_addr_normalize, but also accepts the sender pattern "*@domain". */
int sm_pattern_normalize(const char *in, char *out, size_t outlen, const char **why);

/* The domain part of a normalised address or pattern (after the '@'). */
const char *sm_addr_domain(const char *addr);

/* 1 if s is a syntactically valid DNS domain name, else 0 (no lowercasing). */
int sm_domain_valid(const char *s);

#endif
