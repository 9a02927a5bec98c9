/*
 * ws.c — kumasim's WebSocket echo on /socket.io/ws-echo, so proxy tests can check that
 * upgraded connections reach the node they were routed to: every text or binary message comes
 * back prefixed with "<node id>:".
 *
 * Owns: the handshake, one small thread per upgraded socket (MHD hands the socket over and
 * stops polling it), frame parsing.  Must not: block an MHD thread, or outlive the shutdown
 * drain (each session watches sim.wake_pipe).
 */
#include "sim.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define WS_MSG_MAX (16 * 1024)    /* largest echoed message; "small frames" is the contract */
#define WS_SESSIONS_MAX 1024      /* each session is one thread with a small stack */
#define WS_SEND_TIMEOUT_MS 5000
#define WS_THREAD_STACK (128 * 1024)
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* ============================== SHA-1 and base64 ============================== */
/*
 * Only the WebSocket handshake needs them (Sec-WebSocket-Accept), and kumasim deliberately links
 * no TLS library, so here is a plain FIPS 180-1 SHA-1 written for this file.
 */

static uint32_t rol32(uint32_t x, unsigned n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const unsigned char *p)
{
	uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];

	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
	for (int i = 16; i < 80; i++)
		w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
	for (int i = 0; i < 80; i++) {
		uint32_t f, k;
		if (i < 20) {
			f = (b & c) | (~b & d);
			k = 0x5A827999u;
		} else if (i < 40) {
			f = b ^ c ^ d;
			k = 0x6ED9EBA1u;
		} else if (i < 60) {
			f = (b & c) | (b & d) | (c & d);
			k = 0x8F1BBCDCu;
		} else {
			f = b ^ c ^ d;
			k = 0xCA62C1D6u;
		}
		uint32_t t = rol32(a, 5) + f + e + k + w[i];
		e = d;
		d = c;
		c = rol32(b, 30);
		b = a;
		a = t;
	}
	h[0] += a;
	h[1] += b;
	h[2] += c;
	h[3] += d;
	h[4] += e;
}

static void sha1(const void *data, size_t len, unsigned char out[20])
{
	uint32_t h[5] = { 0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u };
	const unsigned char *p = data;
	unsigned char tail[128];
	size_t full = len / 64 * 64, rest = len - full, tail_len;
	uint64_t bits = (uint64_t)len * 8;

	for (size_t off = 0; off < full; off += 64)
		sha1_block(h, p + off);
	memset(tail, 0, sizeof(tail));
	memcpy(tail, p + full, rest);
	tail[rest] = 0x80;
	tail_len = rest + 1 + 8 <= 64 ? 64 : 128;
	for (int i = 0; i < 8; i++)
		tail[tail_len - 1 - i] = (unsigned char)(bits >> (8 * i));
	for (size_t off = 0; off < tail_len; off += 64)
		sha1_block(h, tail + off);
	for (int i = 0; i < 5; i++) {
		out[4 * i] = (unsigned char)(h[i] >> 24);
		out[4 * i + 1] = (unsigned char)(h[i] >> 16);
		out[4 * i + 2] = (unsigned char)(h[i] >> 8);
		out[4 * i + 3] = (unsigned char)h[i];
	}
}

/* Writes base64 of in[0..len) plus a NUL; out must hold 4*ceil(len/3)+1 bytes. */
static void base64_encode(const unsigned char *in, size_t len, char *out, size_t out_size)
{
	static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0;

	if (out_size < (len + 2) / 3 * 4 + 1) {
		if (out_size > 0)
			out[0] = '\0';
		return;
	}
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < len)
			v |= in[i + 2];
		out[o++] = tbl[(v >> 18) & 63];
		out[o++] = tbl[(v >> 12) & 63];
		out[o++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < len ? tbl[v & 63] : '=';
	}
	out[o] = '\0';
}

/* ============================== WebSocket echo ============================== */

/*
 * One session per upgraded socket.  rx holds at most one whole frame plus what follows it;
 * msg assembles a fragmented message; tx holds one outgoing frame.  The socket is MHD's
 * (non-blocking); it is closed only through MHD_upgrade_action(CLOSE).
 */
struct ws_session {
	struct sim *s;
	const struct node *node;
	int fd;
	struct MHD_UpgradeResponseHandle *urh;
	size_t rx_len;
	size_t msg_len;
	int msg_opcode;               /* 0 = no fragmented message in progress */
	unsigned char rx[WS_MSG_MAX + 14];
	unsigned char msg[WS_MSG_MAX];
	unsigned char tx[WS_MSG_MAX + NODE_ID_MAX + 16];
};

enum ws_step { WS_NEED_MORE, WS_CONSUMED, WS_END };

static bool ws_send_all(struct ws_session *ws, const unsigned char *p, size_t len)
{
	int64_t deadline = mono_ms() + WS_SEND_TIMEOUT_MS;

	while (len > 0) {
		ssize_t n = send(ws->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int64_t left = deadline - mono_ms();
			struct pollfd pf[2] = { { .fd = ws->fd, .events = POLLOUT },
						{ .fd = ws->s->wake_pipe[0], .events = POLLIN } };

			if (left <= 0 || poll(pf, 2, (int)left) < 0 || pf[1].revents != 0)
				return false;
			continue;
		}
		return false;
	}
	return true;
}

/* Sends one unmasked frame; prefix (may be NULL) is prepended to the payload. */
static bool ws_send_frame(struct ws_session *ws, int opcode, const char *prefix,
			  const unsigned char *payload, size_t len)
{
	size_t plen = prefix != NULL ? strlen(prefix) : 0, total = plen + len, h;
	unsigned char *t = ws->tx;

	if (total + 10 > sizeof(ws->tx))
		return false;
	t[0] = (unsigned char)(0x80 | opcode);
	if (total < 126) {
		t[1] = (unsigned char)total;
		h = 2;
	} else if (total <= 0xFFFF) {
		t[1] = 126;
		t[2] = (unsigned char)(total >> 8);
		t[3] = (unsigned char)total;
		h = 4;
	} else {
		t[1] = 127;
		for (int i = 0; i < 8; i++)
			t[2 + i] = (unsigned char)((uint64_t)total >> (56 - 8 * i));
		h = 10;
	}
	memcpy(t + h, prefix != NULL ? prefix : "", plen);
	if (len > 0)
		memcpy(t + h + plen, payload, len);
	return ws_send_all(ws, t, h + total);
}

static void ws_send_close(struct ws_session *ws, unsigned code)
{
	unsigned char p[2] = { (unsigned char)(code >> 8), (unsigned char)code };

	ws_send_frame(ws, 0x8, NULL, p, sizeof(p));
}

static bool ws_echo(struct ws_session *ws, int opcode, const unsigned char *p, size_t len)
{
	char prefix[NODE_ID_MAX + 2];

	snprintf(prefix, sizeof(prefix), "%s:", ws->node->id);
	return ws_send_frame(ws, opcode, prefix, p, len);
}

/* Parses and answers the first frame in rx, if it is complete. */
static enum ws_step ws_handle_frame(struct ws_session *ws)
{
	unsigned char *b = ws->rx;
	size_t have = ws->rx_len, hdr = 2;
	uint64_t len;
	int fin, opcode;

	if (have < 2)
		return WS_NEED_MORE;
	fin = (b[0] & 0x80) != 0;
	opcode = b[0] & 0x0F;
	if ((b[0] & 0x70) != 0 || (b[1] & 0x80) == 0) {
		/* Reserved bits without an extension, or an unmasked client frame (RFC 6455 5.1). */
		ws_send_close(ws, 1002);
		return WS_END;
	}
	len = b[1] & 0x7F;
	if (len == 126) {
		if (have < 4)
			return WS_NEED_MORE;
		len = (uint64_t)b[2] << 8 | b[3];
		hdr = 4;
	} else if (len == 127) {
		if (have < 10)
			return WS_NEED_MORE;
		len = 0;
		for (int i = 0; i < 8; i++)
			len = len << 8 | b[2 + i];
		hdr = 10;
	}
	if ((opcode & 0x8) != 0 && (!fin || len > 125)) {
		ws_send_close(ws, 1002); /* control frames are short and never fragmented */
		return WS_END;
	}
	if (len > WS_MSG_MAX) {
		ws_send_close(ws, 1009);
		return WS_END;
	}
	hdr += 4;
	if (have < hdr + len)
		return WS_NEED_MORE;

	unsigned char *mask = b + hdr - 4, *payload = b + hdr;
	for (uint64_t i = 0; i < len; i++)
		payload[i] ^= mask[i & 3];

	bool ok = true;
	switch (opcode) {
	case 0x1: /* text */
	case 0x2: /* binary */
		if (ws->msg_opcode != 0) {
			ws_send_close(ws, 1002);
			return WS_END;
		}
		if (fin) {
			ok = ws_echo(ws, opcode, payload, (size_t)len);
		} else {
			memcpy(ws->msg, payload, (size_t)len);
			ws->msg_len = (size_t)len;
			ws->msg_opcode = opcode;
		}
		break;
	case 0x0: /* continuation */
		if (ws->msg_opcode == 0) {
			ws_send_close(ws, 1002);
			return WS_END;
		}
		if (ws->msg_len + len > WS_MSG_MAX) {
			ws_send_close(ws, 1009);
			return WS_END;
		}
		memcpy(ws->msg + ws->msg_len, payload, (size_t)len);
		ws->msg_len += (size_t)len;
		if (fin) {
			ok = ws_echo(ws, ws->msg_opcode, ws->msg, ws->msg_len);
			ws->msg_opcode = 0;
			ws->msg_len = 0;
		}
		break;
	case 0x8: /* close: answer with the same code, then end */
		if (len >= 2)
			ws_send_frame(ws, 0x8, NULL, payload, 2);
		else
			ws_send_frame(ws, 0x8, NULL, NULL, 0);
		return WS_END;
	case 0x9: /* ping */
		ok = ws_send_frame(ws, 0xA, NULL, payload, (size_t)len);
		break;
	case 0xA: /* unsolicited pong: ignore */
		break;
	default:
		ws_send_close(ws, 1002);
		return WS_END;
	}
	if (!ok)
		return WS_END;
	ws->rx_len -= hdr + (size_t)len;
	memmove(ws->rx, ws->rx + hdr + len, ws->rx_len);
	return WS_CONSUMED;
}

static void *ws_main(void *arg)
{
	struct ws_session *ws = arg;
	struct sim *s = ws->s;
	bool running = true;

	while (running) {
		enum ws_step step;

		while ((step = ws_handle_frame(ws)) == WS_CONSUMED)
			;
		if (step == WS_END)
			break;

		struct pollfd pf[2] = { { .fd = ws->fd, .events = POLLIN },
					{ .fd = s->wake_pipe[0], .events = POLLIN } };
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf[1].revents != 0) {
			/* Shutting down: say "going away" if the socket takes it right now. */
			unsigned char bye[4] = { 0x88, 2, 1001 >> 8, 1001 & 0xFF };
			(void)send(ws->fd, bye, sizeof(bye), MSG_NOSIGNAL | MSG_DONTWAIT);
			break;
		}
		if (pf[0].revents == 0)
			continue;
		ssize_t n = recv(ws->fd, ws->rx + ws->rx_len, sizeof(ws->rx) - ws->rx_len,
				 MSG_DONTWAIT);
		if (n > 0)
			ws->rx_len += (size_t)n;
		else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
			running = false;
	}
	MHD_upgrade_action(ws->urh, MHD_UPGRADE_ACTION_CLOSE);
	free(ws);
	atomic_fetch_sub(&s->ws_active, 1);
	return NULL;
}

static void on_upgrade(void *cls, struct MHD_Connection *connection, void *con_cls,
		       const char *extra_in, size_t extra_in_size, MHD_socket sock,
		       struct MHD_UpgradeResponseHandle *urh)
{
	struct node *n = cls;
	struct sim *s = n->sim;
	struct ws_session *ws = NULL;
	pthread_attr_t attr;
	pthread_t tid;
	bool started = false;

	if (extra_in_size <= sizeof(ws->rx))
		ws = malloc(sizeof(*ws));
	if (ws == NULL) {
		MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
		return;
	}
	ws->s = s;
	ws->node = n;
	ws->fd = sock;
	ws->urh = urh;
	ws->rx_len = extra_in_size;
	ws->msg_len = 0;
	ws->msg_opcode = 0;
	if (extra_in_size > 0)
		memcpy(ws->rx, extra_in, extra_in_size);

	/* Count first, then look at stopping: either the drain in sim_shutdown sees this session,
	 * or this sees stopping and never starts it. */
	atomic_fetch_add(&s->ws_active, 1);
	if (!atomic_load(&s->stopping) && pthread_attr_init(&attr) == 0) {
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&attr, WS_THREAD_STACK);
		started = pthread_create(&tid, &attr, ws_main, ws) == 0;
		pthread_attr_destroy(&attr);
	}
	if (!started) {
		if (!atomic_load(&s->stopping))
			logmsg(s, "%s: cannot start a WebSocket thread", n->id);
		atomic_fetch_sub(&s->ws_active, 1);
		MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
		free(ws);
	}
}

static bool header_has_token(struct MHD_Connection *c, const char *name, const char *token)
{
	const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);

	return v != NULL && strcasestr(v, token) != NULL;
}

enum MHD_Result serve_ws(struct sim *s, struct node *n, struct MHD_Connection *c)
{
	const char *key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-WebSocket-Key");
	const char *ver = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-WebSocket-Version");
	char buf[24 + sizeof(WS_GUID)], accept[32];
	unsigned char digest[20];
	struct MHD_Response *r;
	enum MHD_Result ret;

	if (!header_has_token(c, MHD_HTTP_HEADER_UPGRADE, "websocket") ||
	    !header_has_token(c, MHD_HTTP_HEADER_CONNECTION, "upgrade"))
		return reply_error(n, c, MHD_HTTP_UPGRADE_REQUIRED, "websocket only",
				   "this path needs Upgrade: websocket", NULL);
	/* The key is base64 of 16 random bytes: exactly 24 characters. */
	if (key == NULL || strlen(key) != 24 || ver == NULL || strcmp(ver, "13") != 0)
		return reply_error(n, c, MHD_HTTP_BAD_REQUEST, "bad websocket handshake",
				   "need Sec-WebSocket-Key (24 chars) and Sec-WebSocket-Version: 13",
				   NULL);
	if (atomic_load(&s->ws_active) >= WS_SESSIONS_MAX || atomic_load(&s->stopping))
		return reply_error(n, c, MHD_HTTP_SERVICE_UNAVAILABLE, "no websocket now",
				   "session limit reached or shutting down", NULL);
	memcpy(buf, key, 24);
	memcpy(buf + 24, WS_GUID, sizeof(WS_GUID) - 1);
	sha1(buf, 24 + sizeof(WS_GUID) - 1, digest);
	base64_encode(digest, sizeof(digest), accept, sizeof(accept));

	r = MHD_create_response_for_upgrade(on_upgrade, n);
	if (r == NULL)
		return MHD_NO;
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_UPGRADE, "websocket") != MHD_YES ||
	    MHD_add_response_header(r, "Sec-WebSocket-Accept", accept) != MHD_YES ||
	    MHD_add_response_header(r, "X-Kuma-Node", n->id) != MHD_YES) {
		MHD_destroy_response(r);
		return MHD_NO;
	}
	ret = MHD_queue_response(c, MHD_HTTP_SWITCHING_PROTOCOLS, r);
	MHD_destroy_response(r);
	return ret;
}

