/*
 * libfido2 (Yubico's C library, an independent peer) against a simulated
 * YubiKey behind the UDP HID bridge (SPEC §10: one datagram = one raw 64-byte
 * CTAPHID report, no report id).
 *
 * libfido2 does the CTAPHID framing itself; this file gives it only report
 * I/O (fido_dev_set_io_functions): open/close a UDP socket, read one report,
 * write one report (libfido2 hands write() a report-id byte first, dropped
 * here, as the bridge carries no report id).
 *
 * Steps, each printed as "ok STEP: ..." or "FAIL STEP: ...":
 *   info        getInfo, and the firmware version INIT reported
 *   set-pin     setPIN on a blank key; clientPin option and 8 retries after
 *   make-rk     makeCredential rk + credProtect 2, packed attestation verified
 *   assert      getAssertion without allow list, signature verified
 *   alg N       for every algorithm getInfo advertises: a non-resident
 *               credential of that algorithm (attestation verified) and an
 *               assertion with it in the allow list (signature verified)
 *   cred-protect  when credProtect is advertised: levels 1, 2 and 3 each
 *               come back in the authenticator data's extension output
 *   credman     metadata, RPs, credentials of the RP, delete, metadata again
 *   u2f         when getInfo lists U2F_V2: a second handle forced to CTAP1
 *               (fido_dev_force_u2f): U2F register (fido-u2f attestation
 *               verified), authenticate (libfido2 checks the key handle
 *               with P1=0x07 first), and the U2F key handle used again over
 *               CTAP2 getAssertion (CTAP 2.1 §10.3 interoperability)
 *   config      authenticatorConfig when getInfo offers authnrCfg:
 *               setMinPINLength, toggleAlwaysUv (if alwaysUv is advertised),
 *               forcePINChange then changePIN; otherwise the key must refuse
 *               authenticatorConfig with INVALID_COMMAND
 * Exit status: 0 if every step passed, 1 if any failed, 2 on usage errors.
 *
 * Usage: client HOST:PORT   (the key must be blank and touch automatically:
 *                            `prereg-station sim serve --touch auto`)
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fido.h>
#include <fido/config.h>
#include <fido/credman.h>
#include <fido/eddsa.h>
#include <fido/es256.h>
#include <fido/es384.h>
#include <fido/rs256.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define REPORT_LEN 64
/* libfido2 passes ms = -1 ("wait forever") on most calls; a simulated key that
 * stops answering must fail the check, not hang CI. Keepalives arrive every
 * 100 ms while the key is busy, so this bounds silence only. */
#define MAX_WAIT_MS 15000

static const char *PIN = "48291375";
static const char *NEW_PIN = "73519042";
static const char *RP_ID = "example.com";

static int failures;

static void
ok(const char *step, const char *fmt, ...)
{
	va_list ap;

	printf("ok %s: ", step);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static void
fail(const char *step, const char *fmt, ...)
{
	va_list ap;

	failures++;
	printf("FAIL %s: ", step);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

/* ---- report I/O over the UDP bridge ---- */

struct udp_handle {
	int fd;
};

/* path: "udp:HOST:PORT" */
static void *
udp_open(const char *path)
{
	struct sockaddr_in local, peer;
	struct udp_handle *h;
	const char *hostport, *colon;
	char host[64];
	long port;

	if (strncmp(path, "udp:", 4) != 0)
		return NULL;
	hostport = path + 4;
	if ((colon = strrchr(hostport, ':')) == NULL ||
	    (size_t)(colon - hostport) >= sizeof(host))
		return NULL;
	memcpy(host, hostport, (size_t)(colon - hostport));
	host[colon - hostport] = '\0';
	port = strtol(colon + 1, NULL, 10);
	if (port <= 0 || port > 65535)
		return NULL;

	memset(&peer, 0, sizeof(peer));
	peer.sin_family = AF_INET;
	peer.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &peer.sin_addr) != 1)
		return NULL;
	memset(&local, 0, sizeof(local));
	local.sin_family = AF_INET;
	local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

	if ((h = calloc(1, sizeof(*h))) == NULL)
		return NULL;
	/* connect(): the kernel then delivers only the key's datagrams. */
	if ((h->fd = socket(AF_INET, SOCK_DGRAM, 0)) < 0 ||
	    bind(h->fd, (struct sockaddr *)&local, sizeof(local)) < 0 ||
	    connect(h->fd, (struct sockaddr *)&peer, sizeof(peer)) < 0) {
		if (h->fd >= 0)
			close(h->fd);
		free(h);
		return NULL;
	}
	return h;
}

static void
udp_close(void *handle)
{
	struct udp_handle *h = handle;

	close(h->fd);
	free(h);
}

static int
udp_read(void *handle, unsigned char *buf, size_t len, int ms)
{
	struct udp_handle *h = handle;
	struct pollfd pfd = { .fd = h->fd, .events = POLLIN };
	unsigned char report[2 * REPORT_LEN];
	ssize_t n;
	int wait = (ms < 0 || ms > MAX_WAIT_MS) ? MAX_WAIT_MS : ms;

	if (len > REPORT_LEN)
		return -1;
	for (;;) {
		int r = poll(&pfd, 1, wait);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1; /* timeout or error */
		if ((n = recv(h->fd, report, sizeof(report), 0)) < 0)
			return -1;
		if (n == REPORT_LEN)
			break;
		/* not one report: not a HID transfer; wait for the next */
	}
	memcpy(buf, report, len);
	return (int)len;
}

static int
udp_write(void *handle, const unsigned char *buf, size_t len)
{
	struct udp_handle *h = handle;

	/* buf[0] is the HID report id; the bridge carries the 64 bytes after it. */
	if (len != REPORT_LEN + 1)
		return -1;
	if (send(h->fd, buf + 1, REPORT_LEN, 0) != REPORT_LEN)
		return -1;
	return (int)len;
}

/* ---- helpers ---- */

static bool
has_option(const fido_cbor_info_t *ci, const char *name, bool *value)
{
	char **names = fido_cbor_info_options_name_ptr(ci);
	const bool *values = fido_cbor_info_options_value_ptr(ci);

	for (size_t i = 0; i < fido_cbor_info_options_len(ci); i++)
		if (strcmp(names[i], name) == 0) {
			if (value)
				*value = values[i];
			return true;
		}
	return false;
}

static fido_cbor_info_t *
get_info(fido_dev_t *dev, const char *step)
{
	fido_cbor_info_t *ci = fido_cbor_info_new();
	int r;

	if (ci == NULL)
		return NULL;
	if ((r = fido_dev_get_cbor_info(dev, ci)) != FIDO_OK) {
		fail(step, "getInfo: %s (%d)", fido_strerr(r), r);
		fido_cbor_info_free(&ci);
	}
	return ci;
}

static void
print_list(const char *label, char **items, size_t n)
{
	printf("   %s:", label);
	for (size_t i = 0; i < n; i++)
		printf(" %s", items[i]);
	printf("\n");
}

/* ---- the credProtect output in raw authenticator data ----
 *
 * fido_cred_prot() returns the level the client *asked for*, so the key's
 * answer is read here: authData (WebAuthn §6.1) = rpIdHash(32) flags(1)
 * signCount(4) [AT: aaguid(16) credIdLen(2) credId COSE_Key] [ED: extensions
 * map]. A minimal CBOR walker skips the COSE key. */

static bool
cbor_head(const unsigned char *p, size_t len, size_t *off, int *major,
    uint64_t *val)
{
	unsigned ai;
	size_t n;

	if (*off >= len)
		return false;
	*major = p[*off] >> 5;
	ai = p[*off] & 0x1f;
	(*off)++;
	if (ai < 24) {
		*val = ai;
		return true;
	}
	if (ai > 27)
		return false; /* indefinite lengths: not canonical CTAP2 */
	n = (size_t)1 << (ai - 24);
	if (len - *off < n)
		return false;
	*val = 0;
	for (size_t i = 0; i < n; i++)
		*val = (*val << 8) | p[(*off)++];
	return true;
}

static bool
cbor_skip(const unsigned char *p, size_t len, size_t *off, int depth)
{
	int major;
	uint64_t val;

	if (depth > 8 || !cbor_head(p, len, off, &major, &val))
		return false;
	switch (major) {
	case 2:
	case 3:
		if (len - *off < val)
			return false;
		*off += (size_t)val;
		return true;
	case 4:
	case 5:
		for (uint64_t i = 0; i < (major == 5 ? 2 * val : val); i++)
			if (!cbor_skip(p, len, off, depth + 1))
				return false;
		return true;
	case 6:
		return cbor_skip(p, len, off, depth + 1);
	default:
		return true;
	}
}

/* The credProtect level in the key's extension output: 0 when absent,
 * -1 when the authenticator data cannot be parsed. */
static int
authdata_cred_protect(const fido_cred_t *cred)
{
	const unsigned char *p = fido_cred_authdata_raw_ptr(cred);
	size_t len = fido_cred_authdata_raw_len(cred), off = 37;
	int major;
	uint64_t n, val;

	if (p == NULL || len < off + 18 || !(p[32] & 0x40))
		return -1;
	off += 16;
	off += 2 + (size_t)((p[off] << 8) | p[off + 1]);
	if (off > len || !cbor_skip(p, len, &off, 0))
		return -1;
	if (!(p[32] & 0x80))
		return 0;
	if (!cbor_head(p, len, &off, &major, &n) || major != 5)
		return -1;
	for (uint64_t i = 0; i < n; i++) {
		size_t key = off;
		if (!cbor_head(p, len, &off, &major, &val))
			return -1;
		if (major == 3 && val == 11 && len - off >= 11 &&
		    memcmp(p + off, "credProtect", 11) == 0) {
			off += 11;
			if (!cbor_head(p, len, &off, &major, &val) ||
			    major != 0)
				return -1;
			return (int)val;
		}
		off = key;
		if (!cbor_skip(p, len, &off, 0) || !cbor_skip(p, len, &off, 0))
			return -1;
	}
	return 0;
}

/* ---- steps ---- */

static bool
step_info(fido_dev_t *dev)
{
	fido_cbor_info_t *ci = get_info(dev, "info");
	char **names;
	const bool *values;
	bool pin_set = true;

	if (ci == NULL)
		return false;
	print_list("versions", fido_cbor_info_versions_ptr(ci),
	    fido_cbor_info_versions_len(ci));
	print_list("extensions", fido_cbor_info_extensions_ptr(ci),
	    fido_cbor_info_extensions_len(ci));
	names = fido_cbor_info_options_name_ptr(ci);
	values = fido_cbor_info_options_value_ptr(ci);
	printf("   options:");
	for (size_t i = 0; i < fido_cbor_info_options_len(ci); i++)
		printf(" %s=%s", names[i], values[i] ? "true" : "false");
	printf("\n   algorithms:");
	for (size_t i = 0; i < fido_cbor_info_algorithm_count(ci); i++)
		printf(" %d", fido_cbor_info_algorithm_cose(ci, i));
	printf("\n   pinUvAuthProtocols:");
	for (size_t i = 0; i < fido_cbor_info_protocols_len(ci); i++)
		printf(" %u", fido_cbor_info_protocols_ptr(ci)[i]);
	printf("\n");

	if (fido_cbor_info_versions_len(ci) == 0)
		fail("info", "no versions");
	else if (fido_cbor_info_aaguid_len(ci) != 16)
		fail("info", "aaguid of %zu bytes",
		    fido_cbor_info_aaguid_len(ci));
	else if (!has_option(ci, "clientPin", &pin_set) || pin_set)
		fail("info", "a blank key must report clientPin=false");
	else if (fido_cbor_info_algorithm_count(ci) == 0)
		fail("info", "no algorithms");
	else
		ok("info", "firmware %u.%u.%u (INIT), maxMsgSize %llu, "
		    "firmwareVersion 0x%llx, minPINLength %llu",
		    fido_dev_major(dev), fido_dev_minor(dev),
		    fido_dev_build(dev),
		    (unsigned long long)fido_cbor_info_maxmsgsiz(ci),
		    (unsigned long long)fido_cbor_info_fwversion(ci),
		    (unsigned long long)fido_cbor_info_minpinlen(ci));
	fido_cbor_info_free(&ci);
	return true;
}

static bool
step_set_pin(fido_dev_t *dev)
{
	fido_cbor_info_t *ci;
	bool pin_set = false;
	int r, retries = -1;

	if ((r = fido_dev_set_pin(dev, PIN, NULL)) != FIDO_OK) {
		fail("set-pin", "setPIN: %s (%d)", fido_strerr(r), r);
		return false;
	}
	if ((ci = get_info(dev, "set-pin")) == NULL)
		return false;
	has_option(ci, "clientPin", &pin_set);
	fido_cbor_info_free(&ci);
	if (!pin_set) {
		fail("set-pin", "clientPin still false after setPIN");
		return false;
	}
	if ((r = fido_dev_get_retry_count(dev, &retries)) != FIDO_OK) {
		fail("set-pin", "getRetries: %s (%d)", fido_strerr(r), r);
		return false;
	}
	if (retries != 8) {
		fail("set-pin", "%d retries after setPIN, want 8", retries);
		return false;
	}
	ok("set-pin", "clientPin=true, 8 retries");
	return true;
}

static fido_cred_t *
step_make_rk(fido_dev_t *dev)
{
	static const unsigned char user_id[] = "prereg-user-1";
	unsigned char cdh[32];
	fido_cred_t *cred = fido_cred_new();
	int r;

	for (size_t i = 0; i < sizeof(cdh); i++)
		cdh[i] = (unsigned char)(0xa0 + i);
	if (cred == NULL ||
	    fido_cred_set_type(cred, COSE_ES256) != FIDO_OK ||
	    fido_cred_set_clientdata_hash(cred, cdh, sizeof(cdh)) != FIDO_OK ||
	    fido_cred_set_rp(cred, RP_ID, "Example") != FIDO_OK ||
	    fido_cred_set_user(cred, user_id, sizeof(user_id) - 1, "jan",
	    "Jan", NULL) != FIDO_OK ||
	    fido_cred_set_rk(cred, FIDO_OPT_TRUE) != FIDO_OK ||
	    fido_cred_set_prot(cred, FIDO_CRED_PROT_UV_OPTIONAL_WITH_ID) !=
	    FIDO_OK) {
		fail("make-rk", "building the request");
		fido_cred_free(&cred);
		return NULL;
	}
	if ((r = fido_dev_make_cred(dev, cred, PIN)) != FIDO_OK) {
		fail("make-rk", "makeCredential: %s (%d)", fido_strerr(r), r);
		fido_cred_free(&cred);
		return NULL;
	}
	/* Packed attestation: signature over authData || clientDataHash by
	 * the x5c leaf. */
	if ((r = fido_cred_verify(cred)) != FIDO_OK) {
		fail("make-rk", "attestation does not verify: %s (%d)",
		    fido_strerr(r), r);
		fido_cred_free(&cred);
		return NULL;
	}
	if (authdata_cred_protect(cred) != FIDO_CRED_PROT_UV_OPTIONAL_WITH_ID) {
		fail("make-rk", "credProtect %d in authData, want 2",
		    authdata_cred_protect(cred));
		fido_cred_free(&cred);
		return NULL;
	}
	ok("make-rk", "fmt %s, credential id %zu bytes, x5c %zu bytes, "
	    "credProtect 2", fido_cred_fmt(cred), fido_cred_id_len(cred),
	    fido_cred_x5c_len(cred));
	return cred;
}

static void
step_assert(fido_dev_t *dev, const fido_cred_t *cred)
{
	unsigned char cdh[32];
	fido_assert_t *a = fido_assert_new();
	es256_pk_t *pk = es256_pk_new();
	int r;

	for (size_t i = 0; i < sizeof(cdh); i++)
		cdh[i] = (unsigned char)(0x30 + i);
	if (a == NULL || pk == NULL ||
	    fido_assert_set_clientdata_hash(a, cdh, sizeof(cdh)) != FIDO_OK ||
	    fido_assert_set_rp(a, RP_ID) != FIDO_OK ||
	    es256_pk_from_ptr(pk, fido_cred_pubkey_ptr(cred),
	    fido_cred_pubkey_len(cred)) != FIDO_OK) {
		fail("assert", "building the request");
		goto out;
	}
	if ((r = fido_dev_get_assert(dev, a, PIN)) != FIDO_OK) {
		fail("assert", "getAssertion: %s (%d)", fido_strerr(r), r);
		goto out;
	}
	if (fido_assert_count(a) != 1) {
		fail("assert", "%zu assertions, want 1", fido_assert_count(a));
		goto out;
	}
	if (fido_assert_user_id_len(a, 0) != fido_cred_user_id_len(cred) ||
	    memcmp(fido_assert_user_id_ptr(a, 0), fido_cred_user_id_ptr(cred),
	    fido_cred_user_id_len(cred)) != 0) {
		fail("assert", "user id differs from the credential's");
		goto out;
	}
	if ((r = fido_assert_verify(a, 0, COSE_ES256, pk)) != FIDO_OK) {
		fail("assert", "signature does not verify: %s (%d)",
		    fido_strerr(r), r);
		goto out;
	}
	ok("assert", "discoverable credential found, signature verified");
out:
	es256_pk_free(&pk);
	fido_assert_free(&a);
}

/* Verifies assertion 0 of `a` with the COSE public key of `cred`. */
static int
verify_with(const fido_assert_t *a, const fido_cred_t *cred, int cose)
{
	const void *ptr = fido_cred_pubkey_ptr(cred);
	size_t len = fido_cred_pubkey_len(cred);
	int r = FIDO_ERR_INVALID_ARGUMENT;

	switch (cose) {
	case COSE_ES256: {
		es256_pk_t *pk = es256_pk_new();
		if (pk != NULL && es256_pk_from_ptr(pk, ptr, len) == FIDO_OK)
			r = fido_assert_verify(a, 0, cose, pk);
		es256_pk_free(&pk);
		break;
	}
	case COSE_ES384: {
		es384_pk_t *pk = es384_pk_new();
		if (pk != NULL && es384_pk_from_ptr(pk, ptr, len) == FIDO_OK)
			r = fido_assert_verify(a, 0, cose, pk);
		es384_pk_free(&pk);
		break;
	}
	case COSE_EDDSA: {
		eddsa_pk_t *pk = eddsa_pk_new();
		if (pk != NULL && eddsa_pk_from_ptr(pk, ptr, len) == FIDO_OK)
			r = fido_assert_verify(a, 0, cose, pk);
		eddsa_pk_free(&pk);
		break;
	}
	case COSE_RS256: {
		rs256_pk_t *pk = rs256_pk_new();
		if (pk != NULL && rs256_pk_from_ptr(pk, ptr, len) == FIDO_OK)
			r = fido_assert_verify(a, 0, cose, pk);
		rs256_pk_free(&pk);
		break;
	}
	default:
		break;
	}
	return r;
}

static void
step_algorithm(fido_dev_t *dev, int cose)
{
	static const unsigned char user_id[] = "prereg-user-alg";
	unsigned char cdh[32];
	char step[16];
	fido_cred_t *cred = fido_cred_new();
	fido_assert_t *a = fido_assert_new();
	int r;

	snprintf(step, sizeof(step), "alg %d", cose);
	for (size_t i = 0; i < sizeof(cdh); i++)
		cdh[i] = (unsigned char)(0x50 + i);
	if (cose != COSE_ES256 && cose != COSE_ES384 && cose != COSE_EDDSA &&
	    cose != COSE_RS256) {
		fail(step, "advertised, but this client cannot verify it");
		goto out;
	}
	if (cred == NULL || a == NULL ||
	    fido_cred_set_type(cred, cose) != FIDO_OK ||
	    fido_cred_set_clientdata_hash(cred, cdh, sizeof(cdh)) != FIDO_OK ||
	    fido_cred_set_rp(cred, RP_ID, "Example") != FIDO_OK ||
	    fido_cred_set_user(cred, user_id, sizeof(user_id) - 1, "alg",
	    NULL, NULL) != FIDO_OK) {
		fail(step, "building the request");
		goto out;
	}
	if ((r = fido_dev_make_cred(dev, cred, PIN)) != FIDO_OK) {
		fail(step, "makeCredential: %s (%d)", fido_strerr(r), r);
		goto out;
	}
	if ((r = fido_cred_verify(cred)) != FIDO_OK) {
		fail(step, "attestation does not verify: %s (%d)",
		    fido_strerr(r), r);
		goto out;
	}
	if (fido_assert_set_clientdata_hash(a, cdh, sizeof(cdh)) != FIDO_OK ||
	    fido_assert_set_rp(a, RP_ID) != FIDO_OK ||
	    fido_assert_allow_cred(a, fido_cred_id_ptr(cred),
	    fido_cred_id_len(cred)) != FIDO_OK) {
		fail(step, "building the assertion request");
		goto out;
	}
	if ((r = fido_dev_get_assert(dev, a, PIN)) != FIDO_OK) {
		fail(step, "getAssertion: %s (%d)", fido_strerr(r), r);
		goto out;
	}
	if ((r = verify_with(a, cred, cose)) != FIDO_OK) {
		fail(step, "assertion signature does not verify: %s (%d)",
		    fido_strerr(r), r);
		goto out;
	}
	ok(step, "credential made (attestation verified), assertion verified");
out:
	fido_assert_free(&a);
	fido_cred_free(&cred);
}

static void
step_algorithms(fido_dev_t *dev)
{
	fido_cbor_info_t *ci = get_info(dev, "algorithms");
	int algs[16];
	size_t n = 0;

	if (ci == NULL)
		return;
	for (size_t i = 0; i < fido_cbor_info_algorithm_count(ci) && n < 16; i++)
		algs[n++] = fido_cbor_info_algorithm_cose(ci, i);
	fido_cbor_info_free(&ci);
	for (size_t i = 0; i < n; i++)
		step_algorithm(dev, algs[i]);
}

static void
step_cred_protect(fido_dev_t *dev)
{
	static const unsigned char user_id[] = "prereg-user-prot";
	fido_cbor_info_t *ci = get_info(dev, "cred-protect");
	unsigned char cdh[32];
	bool advertised = false;
	int r;

	if (ci == NULL)
		return;
	for (size_t i = 0; i < fido_cbor_info_extensions_len(ci); i++)
		if (strcmp(fido_cbor_info_extensions_ptr(ci)[i],
		    "credProtect") == 0)
			advertised = true;
	fido_cbor_info_free(&ci);
	if (!advertised) {
		ok("cred-protect", "credProtect not advertised");
		return;
	}
	for (size_t i = 0; i < sizeof(cdh); i++)
		cdh[i] = (unsigned char)(0x90 + i);
	for (int level = FIDO_CRED_PROT_UV_OPTIONAL;
	    level <= FIDO_CRED_PROT_UV_REQUIRED; level++) {
		fido_cred_t *cred = fido_cred_new();

		if (cred == NULL ||
		    fido_cred_set_type(cred, COSE_ES256) != FIDO_OK ||
		    fido_cred_set_clientdata_hash(cred, cdh, sizeof(cdh)) !=
		    FIDO_OK ||
		    fido_cred_set_rp(cred, RP_ID, NULL) != FIDO_OK ||
		    fido_cred_set_user(cred, user_id, sizeof(user_id) - 1,
		    "prot", NULL, NULL) != FIDO_OK ||
		    fido_cred_set_prot(cred, level) != FIDO_OK) {
			fail("cred-protect", "building the request");
			fido_cred_free(&cred);
			return;
		}
		r = fido_dev_make_cred(dev, cred, PIN);
		if (r != FIDO_OK) {
			fail("cred-protect", "level %d: makeCredential: %s "
			    "(%d)", level, fido_strerr(r), r);
			fido_cred_free(&cred);
			return;
		}
		if (authdata_cred_protect(cred) != level) {
			fail("cred-protect", "level %d requested, authData "
			    "reports %d (0: no output)", level,
			    authdata_cred_protect(cred));
			fido_cred_free(&cred);
			return;
		}
		fido_cred_free(&cred);
	}
	ok("cred-protect", "levels 1, 2, 3 reported in the extension output");
}

static void
step_credman(fido_dev_t *dev, const fido_cred_t *cred)
{
	fido_credman_metadata_t *md = fido_credman_metadata_new();
	fido_credman_rp_t *rp = fido_credman_rp_new();
	fido_credman_rk_t *rk = fido_credman_rk_new();
	const fido_cred_t *found;
	uint64_t remaining;
	int r;

	if (md == NULL || rp == NULL || rk == NULL) {
		fail("credman", "allocation");
		goto out;
	}
	if ((r = fido_credman_get_dev_metadata(dev, md, PIN)) != FIDO_OK) {
		fail("credman", "getCredsMetadata: %s (%d)", fido_strerr(r), r);
		goto out;
	}
	if (fido_credman_rk_existing(md) != 1) {
		fail("credman", "%llu existing credentials, want 1",
		    (unsigned long long)fido_credman_rk_existing(md));
		goto out;
	}
	remaining = fido_credman_rk_remaining(md);
	if ((r = fido_credman_get_dev_rp(dev, rp, PIN)) != FIDO_OK) {
		fail("credman", "enumerateRPs: %s (%d)", fido_strerr(r), r);
		goto out;
	}
	if (fido_credman_rp_count(rp) != 1 ||
	    strcmp(fido_credman_rp_id(rp, 0), RP_ID) != 0) {
		fail("credman", "enumerateRPs: %zu RPs, want %s only",
		    fido_credman_rp_count(rp), RP_ID);
		goto out;
	}
	if ((r = fido_credman_get_dev_rk(dev, RP_ID, rk, PIN)) != FIDO_OK) {
		fail("credman", "enumerateCredentials: %s (%d)",
		    fido_strerr(r), r);
		goto out;
	}
	if (fido_credman_rk_count(rk) != 1 ||
	    (found = fido_credman_rk(rk, 0)) == NULL ||
	    fido_cred_id_len(found) != fido_cred_id_len(cred) ||
	    memcmp(fido_cred_id_ptr(found), fido_cred_id_ptr(cred),
	    fido_cred_id_len(cred)) != 0) {
		fail("credman", "enumerateCredentials: not the one credential "
		    "made");
		goto out;
	}
	/* Here fido_cred_prot() is the key's answer: libfido2 fills it from
	 * the enumerateCredentials reply (credProtect, 0x0A). */
	if (fido_cred_prot(found) != FIDO_CRED_PROT_UV_OPTIONAL_WITH_ID) {
		fail("credman", "credProtect %d listed, want 2",
		    fido_cred_prot(found));
		goto out;
	}
	if ((r = fido_credman_del_dev_rk(dev, fido_cred_id_ptr(cred),
	    fido_cred_id_len(cred), PIN)) != FIDO_OK) {
		fail("credman", "deleteCredential: %s (%d)", fido_strerr(r), r);
		goto out;
	}
	if ((r = fido_credman_get_dev_metadata(dev, md, PIN)) != FIDO_OK) {
		fail("credman", "getCredsMetadata after delete: %s (%d)",
		    fido_strerr(r), r);
		goto out;
	}
	if (fido_credman_rk_existing(md) != 0 ||
	    fido_credman_rk_remaining(md) != remaining + 1) {
		fail("credman", "after delete: %llu existing, %llu remaining "
		    "(was %llu)",
		    (unsigned long long)fido_credman_rk_existing(md),
		    (unsigned long long)fido_credman_rk_remaining(md),
		    (unsigned long long)remaining);
		goto out;
	}
	ok("credman", "metadata, 1 RP, 1 credential (credProtect 2), deleted; "
	    "%llu slots free", (unsigned long long)remaining + 1);
out:
	fido_credman_rk_free(&rk);
	fido_credman_rp_free(&rp);
	fido_credman_metadata_free(&md);
}

static bool
lists_version(fido_dev_t *dev, const char *version)
{
	fido_cbor_info_t *ci = get_info(dev, "u2f");
	bool found = false;

	if (ci == NULL)
		return false;
	for (size_t i = 0; i < fido_cbor_info_versions_len(ci); i++)
		if (strcmp(fido_cbor_info_versions_ptr(ci)[i], version) == 0)
			found = true;
	fido_cbor_info_free(&ci);
	return found;
}

static void
step_u2f(fido_dev_t *dev, const char *path, const fido_dev_io_t *io)
{
	static const unsigned char user_id[] = "prereg-user-u2f";
	unsigned char cdh[32];
	fido_dev_t *u2f = NULL;
	fido_cred_t *cred = fido_cred_new();
	fido_assert_t *a = fido_assert_new(), *a2 = fido_assert_new();
	int r;

	if (!lists_version(dev, "U2F_V2")) {
		ok("u2f", "U2F_V2 not advertised");
		goto out;
	}
	for (size_t i = 0; i < sizeof(cdh); i++)
		cdh[i] = (unsigned char)(0x70 + i);
	if (cred == NULL || a == NULL || a2 == NULL ||
	    (u2f = fido_dev_new()) == NULL ||
	    fido_dev_set_io_functions(u2f, io) != FIDO_OK) {
		fail("u2f", "allocation");
		goto out;
	}
	if ((r = fido_dev_open(u2f, path)) != FIDO_OK) {
		fail("u2f", "second handle: %s (%d)", fido_strerr(r), r);
		goto out;
	}
	fido_dev_force_u2f(u2f);
	if (fido_cred_set_type(cred, COSE_ES256) != FIDO_OK ||
	    fido_cred_set_clientdata_hash(cred, cdh, sizeof(cdh)) != FIDO_OK ||
	    fido_cred_set_rp(cred, RP_ID, NULL) != FIDO_OK ||
	    fido_cred_set_user(cred, user_id, sizeof(user_id) - 1, NULL,
	    NULL, NULL) != FIDO_OK) {
		fail("u2f", "building the request");
		goto out;
	}
	if ((r = fido_dev_make_cred(u2f, cred, NULL)) != FIDO_OK) {
		fail("u2f", "U2F register: %s (%d)", fido_strerr(r), r);
		goto out;
	}
	if ((r = fido_cred_verify(cred)) != FIDO_OK) {
		fail("u2f", "U2F register: %s attestation does not verify: "
		    "%s (%d)", fido_cred_fmt(cred), fido_strerr(r), r);
		goto out;
	}
	if (fido_assert_set_clientdata_hash(a, cdh, sizeof(cdh)) != FIDO_OK ||
	    fido_assert_set_rp(a, RP_ID) != FIDO_OK ||
	    fido_assert_allow_cred(a, fido_cred_id_ptr(cred),
	    fido_cred_id_len(cred)) != FIDO_OK ||
	    fido_assert_set_clientdata_hash(a2, cdh, sizeof(cdh)) != FIDO_OK ||
	    fido_assert_set_rp(a2, RP_ID) != FIDO_OK ||
	    fido_assert_allow_cred(a2, fido_cred_id_ptr(cred),
	    fido_cred_id_len(cred)) != FIDO_OK) {
		fail("u2f", "building the assertion requests");
		goto out;
	}
	if ((r = fido_dev_get_assert(u2f, a, NULL)) != FIDO_OK) {
		fail("u2f", "U2F authenticate: %s (%d)", fido_strerr(r), r);
		goto out;
	}
	if ((r = verify_with(a, cred, COSE_ES256)) != FIDO_OK) {
		fail("u2f", "U2F authenticate: signature does not verify: "
		    "%s (%d)", fido_strerr(r), r);
		goto out;
	}
	/* The U2F key handle over CTAP2 (no PIN: up only). */
	if ((r = fido_dev_get_assert(dev, a2, NULL)) != FIDO_OK) {
		fail("u2f", "CTAP2 getAssertion with the U2F key handle: "
		    "%s (%d)", fido_strerr(r), r);
		goto out;
	}
	if ((r = verify_with(a2, cred, COSE_ES256)) != FIDO_OK) {
		fail("u2f", "CTAP2 assertion with the U2F key handle does not "
		    "verify: %s (%d)", fido_strerr(r), r);
		goto out;
	}
	ok("u2f", "register (%s attestation verified), authenticate, and the "
	    "key handle over CTAP2", fido_cred_fmt(cred));
out:
	if (u2f != NULL) {
		fido_dev_close(u2f);
		fido_dev_free(&u2f);
	}
	fido_assert_free(&a2);
	fido_assert_free(&a);
	fido_cred_free(&cred);
}

static void
step_config(fido_dev_t *dev)
{
	fido_cbor_info_t *ci = get_info(dev, "config");
	bool cfg = false, always_uv = false, has_always_uv, v = false;
	int r;

	if (ci == NULL)
		return;
	has_option(ci, "authnrCfg", &cfg);
	has_always_uv = has_option(ci, "alwaysUv", &always_uv);
	fido_cbor_info_free(&ci);

	if (!cfg) {
		/* Not advertised: the command must not exist either. */
		r = fido_dev_set_pin_minlen(dev, 8, PIN);
		if (r == FIDO_ERR_INVALID_COMMAND)
			ok("config", "not advertised, and refused with "
			    "INVALID_COMMAND");
		else
			fail("config", "not advertised, yet setMinPINLength "
			    "answered %s (%d)", fido_strerr(r), r);
		return;
	}

	if ((r = fido_dev_set_pin_minlen(dev, 8, PIN)) != FIDO_OK) {
		fail("config", "setMinPINLength: %s (%d)", fido_strerr(r), r);
		return;
	}
	if ((ci = get_info(dev, "config")) == NULL)
		return;
	if (fido_cbor_info_minpinlen(ci) != 8) {
		fail("config", "minPINLength %llu after setMinPINLength 8",
		    (unsigned long long)fido_cbor_info_minpinlen(ci));
		fido_cbor_info_free(&ci);
		return;
	}
	fido_cbor_info_free(&ci);

	if (has_always_uv) {
		for (int round = 0; round < 2; round++) {
			if ((r = fido_dev_toggle_always_uv(dev, PIN)) !=
			    FIDO_OK) {
				fail("config", "toggleAlwaysUv: %s (%d)",
				    fido_strerr(r), r);
				return;
			}
			if ((ci = get_info(dev, "config")) == NULL)
				return;
			has_option(ci, "alwaysUv", &v);
			fido_cbor_info_free(&ci);
			if (v == always_uv) {
				fail("config", "alwaysUv still %s after "
				    "toggleAlwaysUv", v ? "true" : "false");
				return;
			}
			always_uv = v;
		}
	}

	if ((r = fido_dev_force_pin_change(dev, PIN)) != FIDO_OK) {
		fail("config", "forcePINChange: %s (%d)", fido_strerr(r), r);
		return;
	}
	if ((ci = get_info(dev, "config")) == NULL)
		return;
	v = fido_cbor_info_new_pin_required(ci);
	fido_cbor_info_free(&ci);
	if (!v) {
		fail("config", "forcePINChange not reported by getInfo");
		return;
	}
	if ((r = fido_dev_set_pin(dev, NEW_PIN, PIN)) != FIDO_OK) {
		fail("config", "changePIN after forcePINChange: %s (%d)",
		    fido_strerr(r), r);
		return;
	}
	if ((ci = get_info(dev, "config")) == NULL)
		return;
	v = fido_cbor_info_new_pin_required(ci);
	fido_cbor_info_free(&ci);
	if (v) {
		fail("config", "forcePINChange still set after changePIN");
		return;
	}
	ok("config", "setMinPINLength 8%s, forcePINChange then changePIN",
	    has_always_uv ? ", toggleAlwaysUv on and off" : "");
}

int
main(int argc, char **argv)
{
	static const fido_dev_io_t io = {
		udp_open, udp_close, udp_read, udp_write,
	};
	fido_dev_t *dev;
	fido_cred_t *cred = NULL;
	char path[128];
	int r;

	if (argc != 2 || snprintf(path, sizeof(path), "udp:%s", argv[1]) >=
	    (int)sizeof(path)) {
		fprintf(stderr, "usage: %s HOST:PORT\n", argv[0]);
		return 2;
	}
	fido_init(0);
	if ((dev = fido_dev_new()) == NULL ||
	    fido_dev_set_io_functions(dev, &io) != FIDO_OK) {
		fprintf(stderr, "fido_dev_new / fido_dev_set_io_functions\n");
		return 2;
	}
	if ((r = fido_dev_open(dev, path)) != FIDO_OK) {
		fail("open", "%s: %s (%d)", path, fido_strerr(r), r);
		fido_dev_free(&dev);
		return 1;
	}
	if (!fido_dev_is_fido2(dev))
		fail("open", "INIT capabilities lack CBOR");

	step_info(dev);
	if (step_set_pin(dev)) {
		if ((cred = step_make_rk(dev)) != NULL) {
			step_assert(dev, cred);
			step_algorithms(dev);
			step_cred_protect(dev);
			step_credman(dev, cred);
		} else {
			fail("assert", "skipped: no credential");
			fail("credman", "skipped: no credential");
		}
		step_u2f(dev, path, &io);
		step_config(dev);
	}

	fido_cred_free(&cred);
	fido_dev_close(dev);
	fido_dev_free(&dev);
	printf("%s\n", failures ? "libfido2 client: FAILED" :
	    "libfido2 client: all steps passed");
	return failures ? 1 : 0;
}
