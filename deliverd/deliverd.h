/*
 * deliverd - internal interfaces of the delivery agent.
 *
 * A deliverd takes one job at a time from queued (a queue id and the
 * recipients that share a transport and next hop), reads the message from
 * queue/QID itself (bodies never travel over IPC), and reports one result
 * per recipient.  Transports: smtp.c (smarthost relay), maildir.c (local).
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
};

extern struct config *cfg;

/* smtp.c: deliver to the configured smarthost(s); fills every r[].status. */
void smtp_deliver(struct delivery *d);
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
