/*
 * deliverd - internal interfaces of the delivery agent.
 *
 * A deliverd takes one job at a time from queued (a queue id and the
 * recipients that share a transport and next hop), reads the message from
 * queue/QID itself (bodies never travel over IPC), and reports one result
 * per recipient.  Transports: smtp.c (smarthost relay, and the SMTP session
 * for both paths), mx.c (direct MX delivery: DNS, then smtp.c per address),
 * maildir.c (local).
 */
#ifndef POSTERN_DELIVERD_H
#define POSTERN_DELIVERD_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "spool.h"

#define RESULT_TEXT_MAX 400

struct rcpt_result {
	uint32_t idx;
	char addr[ADDR_PATH_MAX + 1];
	int status;                      /* 2, 4 or 5; 0 = not yet decided */
	char text[RESULT_TEXT_MAX + 1];  /* reply or reason, with the host */
};

struct delivery {
	const char *qid;
	int fd;                          /* message file, read-only */
	const struct spool_env *env;
	struct rcpt_result *r;
	size_t n;
	char relay[300];                 /* host:port that answered last */
	int site_down;                   /* every host of the next hop failed as a
	                                    whole (connect, banner, EHLO, TLS, AUTH,
	                                    4xx to MAIL): queued suspends the hop */
};

extern struct config *cfg;

/* smtp.c: deliver to the configured smarthost(s); fills every r[].status. */
void smtp_deliver(struct delivery *d);

/* One SMTP attempt at one host (smtp.c).  relay: the smarthost path (AUTH,
 * relay.rewrite_sender, connection reuse); else an MX host (no AUTH, no
 * reuse).  addr: the numeric address to connect to, or NULL to resolve host
 * with the system resolver (smarthosts). */
struct smtp_target {
	const char *host;      /* for messages, TLS SNI and verification */
	const char *addr;
	int port;
	int tls;               /* enum relay_tls */
	int verify;
	int relay;
};
/* 0: every recipient has a final or per-recipient status; 1: the host
 * failed as a whole (connection, banner, EHLO, TLS, 4xx to MAIL): try the
 * next one.  r[].text then holds the reason. */
int smtp_attempt(struct delivery *d, const struct smtp_target *t);

/* mx.c: deliver to domain's MX hosts (no relay configured). */
void mx_deliver(struct delivery *d, const char *domain);
/* Start/stop the resolver (after ev_init; again on reload). */
void mx_init(void);
void mx_shutdown(void);

/* main.c: stop/resume reading queued's channel while a job pumps the
 * event loop for DNS answers (no JOB may arrive inside a job). */
void job_io_pause(int pause);
/* A connection kept after the last job (for reuse); QUIT and close it. */
int smtp_has_idle(void);
void smtp_idle_close(void);
/* Before the privilege drop: read relay.password_file (refused if others
 * may read it).  -1 with err filled. */
int smtp_load_password(const struct config *c, char *err, size_t errlen);
void smtp_reload(void);   /* SIGHUP: rebuild the TLS context on next use */
#define SMTP_IDLE_MS 5000

/* maildir.c */
int maildir_open_root(const char *pattern);   /* before privileges drop */
void maildir_deliver(struct delivery *d);

#endif
