/* sm_receipt — the proof that an ack's sender could read the message
 * (docs/PROTOCOL.md "Receipts"):
 *
 *   receipt = base64url(32 random octets)            43 characters
 *   sealed as the OpenPGP literal data's file name   "stubmail-receipt." receipt
 *   stored by the sender's ISP as                     SHA-256(receipt), 32 octets
 *
 * The milter makes one per message and seals it inside the encrypted body,
 * where only the recipients' keys reveal it; pollerd reads it when it
 * opens the body and sends it with the ack; mod_stubmail compares its hash
 * with the stored one in constant time. The hash is over the receipt's 43
 * characters as they travel, so nobody decodes anything to check one. */
#ifndef SM_RECEIPT_H
#define SM_RECEIPT_H

#include <stddef.h>

#define SM_RECEIPT_LEN     43                  /* base64url of 32 octets, no padding */
#define SM_RECEIPT_HASH_LEN 32                 /* SHA-256 */
#define SM_RECEIPT_NAME_PREFIX "stubmail-receipt."

/* A fresh receipt into receipt (SM_RECEIPT_LEN + 1), its hash into hash
 * (SM_RECEIPT_HASH_LEN). 0, or -1 when the random source failed. */
int sm_receipt_new(char *receipt, unsigned char *hash);

/* 1 when s is a receipt's form: exactly SM_RECEIPT_LEN base64url characters. */
int sm_receipt_valid(const char *s);

/* The literal-data file name that carries receipt, into name (at least
 * sizeof SM_RECEIPT_NAME_PREFIX + SM_RECEIPT_LEN). */
void sm_receipt_name(const char *receipt, char *name, size_t namelen);

/* The receipt a literal-data file name carries, into receipt
 * (SM_RECEIPT_LEN + 1): 0, or -1 (receipt "") when name carries none. */
int sm_receipt_from_name(const char *name, char *receipt);

/* 1 when receipt is well formed and its SHA-256 is hash (hashlen octets),
 * compared in constant time; else 0. */
int sm_receipt_matches(const char *receipt, const unsigned char *hash, size_t hashlen);

#endif
