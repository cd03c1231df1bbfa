/*
 * fuzz-dns-packet.c — libFuzzer entry point for dns_packet_parse(), the
 * parser of DNS answers the outbound client acts on (src/deliver/dns.c).
 *
 * Input: byte 0 picks the record type asked for (A, AAAA, MX: the lookups'
 * types; CNAMEs are followed, never asked for); the
 * rest is a DNS response message as a resolver sends it. Checked: no
 * crash or sanitizer report; on success the record count is within the
 * limit, every record has the type asked for, and every name is
 * NUL-terminated, lower case where it is a host name, and within
 * DNS_NAME_MAX.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "deliver/dns.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint16_t types[] = { DNS_TYPE_A, DNS_TYPE_AAAA, DNS_TYPE_MX };
	struct dns_rr rrs[8];
	size_t n = 0;
	int rcode = -1;
	const char *error = NULL;
	if (size < 1)
		return 0;
	uint16_t qtype = types[data[0] % 3];
	if (dns_packet_parse(data + 1, size - 1, qtype, rrs, 8, &n, &rcode, &error) < 0) {
		if (error == NULL)
			abort();
		return 0;
	}
	if (n > 8 || rcode < 0 || rcode > 15)
		abort();
	for (size_t i = 0; i < n; i++) {
		if (rrs[i].type != qtype)
			abort();
		size_t len = strnlen(rrs[i].name, sizeof(rrs[i].name));
		if (len > DNS_NAME_MAX)
			abort();
		for (size_t k = 0; k < len; k++) {
			if (rrs[i].name[k] >= 'A' && rrs[i].name[k] <= 'Z')
				abort();
		}
	}
	return 0;
}
