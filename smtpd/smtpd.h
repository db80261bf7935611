/*
 * smtpd - internal interfaces of the ESMTP listener.
 *
 * One process, one epoll loop, many sessions.  main.c owns listeners,
 * connection limits and the link to queued; session.c the per-client
 * state machine; policy.c the relay decision; data.c the DATA reader;
 * auth.c SMTP AUTH.  TLS (STARTTLS, implicit on submissions) runs inside
 * the session with nonblocking OpenSSL calls (shared/tls.h).
 * Each session is torn down only by session_free().
 */
#ifndef POSTERN_SMTPD_H
#define POSTERN_SMTPD_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

#include "addr.h"
#include "buf.h"
#include "config.h"
#include "data.h"
#include "dns.h"
#include "event.h"
#include "net.h"
#include "spool.h"

#define SMTPD_DNSBL_MAX 8        /* smtpd.dnsbl zones checked per client */
#include "tls.h"

#define SMTPD_IN_CAP 65536       /* input buffer bound per session */
#define SMTPD_OUT_CAP 65536      /* replies pending to a client that does not read */
#define SMTPD_OUT_PAUSE 16384    /* stop reading commands above this much output */

enum session_state {
	SS_GREET = 0,  /* banner sent, no HELO yet */
	SS_READY,      /* HELO/EHLO done, no transaction */
	SS_MAIL,       /* MAIL accepted */
	SS_RCPT,       /* at least one RCPT accepted */
	SS_DATA,       /* reading message data */
	SS_CLOSING     /* flush replies, then close */
};

enum { SESSION_TLS_NONE = 0, SESSION_TLS_HANDSHAKE, SESSION_TLS_UP };

/* AUTH limits (auth.c): failures per address, the answer delay, lockout. */
#define AUTH_FAIL_MAX 5
#define AUTH_FAIL_WINDOW 600      /* seconds in which AUTH_FAIL_MAX count */
#define AUTH_LOCK_SECS 600
#define AUTH_FAIL_DELAY_MS 1000
#define AUTH_LINE_MAX 2048        /* a SASL response line */

struct listener {
	int fd;
	int mode;
	char address[64];
	int port;
};

/* A message whose file is in incoming/ and whose 250 waits for the
 * group commit (shared/gcommit.h).  It outlives its session if the client
 * goes away meanwhile: the commit still ends and queued still hears. */
struct commit_wait {
	uint64_t ticket;
	struct session *s;          /* NULL once the session is gone */
	char qid[QID_MAX];
	char ip[64];
	char helo[256];
	char sender[ADDR_PATH_MAX + 1];
	size_t nrcpt;
	uint64_t size;
	struct commit_wait *next;
};

struct session {
	int fd;
	struct sockaddr_storage peer;
	char ip[64];
	int port;
	const struct listener *l;
	int state;
	int esmtp;
	char helo[256];
	struct addr sender;
	char **rcpt;
	size_t nrcpt;
	int body_8bit;
	int smtputf8;
	int errors;
	struct buf in;
	struct buf out;
	int skipping;               /* discarding the rest of an over-long line */
	struct ev_timer timer;
	struct spool_writer *w;
	struct commit_wait *commit; /* waiting for the group commit: input paused */
	struct data_reader *dr;     /* allocated at DATA, freed with the transaction */
	struct {
		int done;               /* header section over (or not tracked) */
		int bol;                /* at the start of a line */
		char name[16];          /* field name so far (lower case, cut) */
		size_t nlen;
		int in_name;
		int seen_date, seen_msgid;
	} hdr;                      /* RFC 6409 8.3 completion on submission ports */
	uint64_t data_deadline_ms;
	uint64_t last_io_ms;        /* last readiness event: idle buffers are trimmed */
	tls_conn *tls;              /* set from the start of the handshake */
	int tls_state;              /* SESSION_TLS_* */
	int tls_want;               /* TLS_WANT_* the last TLS call asked for */
	int starttls;               /* 220 queued: switch once it is written */
	char tls_desc[96];          /* "TLSv1.3 TLS_AES_256_GCM_SHA384" */
	int auth_step;              /* inside a SASL exchange (auth.c) */
	char auth_user[256];        /* authenticated name, "" if none */
	char auth_login[256];       /* LOGIN: the name between the two steps */
	struct ev_timer delay_timer;
	int delayed;                /* answer held back (failed AUTH) */
	int delayed_close;
	char delayed_reply[128];
	unsigned long id;           /* for log lines before a queue id exists */
	struct dnsbl_wait {         /* dnsbl.c: lookups before the banner */
		struct session *s;
		struct dns_query *q;    /* NULL once answered or cancelled */
		char zone[256];
	} *dnsbl;                   /* SMTPD_DNSBL_MAX, only while checking */
	size_t dnsbl_left;          /* lookups not yet answered */
	struct ev_timer dnsbl_timer;
	struct session *prev, *next;
};

extern struct config *cfg;

/* dnsbl.c: smtpd.dnsbl checks of clients not in mynetworks, before the
 * banner.  dnsbl_init() once at start (and on reload: only starts the
 * resolver if it is not running yet).  dnsbl_start() returns 1 when
 * lookups are under way: the session holds its banner (s->delayed) and
 * dnsbl.c sends it, or the 554 and a close, when they are done or after
 * dns.timeout.  dnsbl_cancel() from session teardown. */
void dnsbl_init(void);
int dnsbl_start(struct session *s);
void dnsbl_cancel(struct session *s);
/* session.c: the banner (or reply and close) after the DNSBL checks. */
void session_resume(struct session *s, const char *reply, int close_after);
extern tls_ctx *smtpd_tls;      /* server context, NULL without tls.cert */

/* session.c */
void session_new(int fd, const struct sockaddr_storage *peer, const struct listener *l);
void session_free(struct session *s);
void session_shutdown_all(void);
void session_abort_all(void);
size_t session_count(void);
struct session *session_first(void);   /* newest session (tests, fuzzing) */
/* Feed input bytes to a session as if read from the socket (tests, fuzz). */
void session_process(struct session *s);
/* gcommit done callback: finish the messages whose commit returned. */
void session_commit_done(uint64_t upto, int err);
size_t session_commits_pending(void);
void session_reply(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hold input processing for ms, then send reply (and close if asked). */
void session_delay(struct session *s, unsigned ms, const char *reply, int close_after);

/* auth.c */
int auth_users_load(const char *path);     /* before the privilege drop */
int auth_users_reload(const char *path);   /* SIGHUP */
/* The master's fresh copy after a reload (the file may be root-only);
 * takes fd. */
int auth_users_from_fd(int fd, const char *path);
int auth_enabled(void);
int auth_verify(const char *name, const char *pass);   /* 1 if right */
int auth_locked(const char *ip);
int auth_failed(const char *ip);           /* count a failure; returns the count */
void auth_succeeded(const char *ip);
void auth_start(struct session *s, char *arg);          /* the AUTH command */
void auth_response(struct session *s, const char *line, size_t len);
/* Strict base64 into out[cap]; -1 on any bad input or overflow. */
int auth_b64_decode(const char *in, size_t inlen, unsigned char *out, size_t cap, size_t *outlen);
int auth_b64_encode(const unsigned char *in, size_t n, char *out, size_t cap);

/* policy.c */
int policy_has_room(uint64_t announced);   /* enough spool space for MAIL? */
int policy_client_trusted(const struct sockaddr *sa);   /* in mynetworks */
/* 0 ok; else -1 and *reply names the SMTP reply for RCPT. */
int policy_rcpt(const struct session *s, const struct addr *rcpt, const char **reply);
int policy_load(void);

/* main.c */
void smtpd_notify_queued(const char *qid);
void smtpd_conn_closed(const struct session *s);

#endif
