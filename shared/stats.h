/*
 * stats - event counters that children report to the master, which keeps
 * them (so they survive a restart of any single child) and serves them as
 * Prometheus metrics (master/metrics.c, docs/metrics.md).
 *
 * A child calls stats_add() for a counter event and stats_set() for a
 * gauge it owns; both only touch a local array.  Changes are sent to the
 * master at most every STATS_FLUSH_MS as one IPC_STATS message: u32
 * count, then count x (u32 id, u64 value), a counter's value being the
 * increment since the last flush and a gauge's its current value.  So a
 * busy smtpd costs the master a few messages per second, not one per
 * event.  A child killed with SIGKILL loses at most its last
 * STATS_FLUSH_MS of counts; stats_flush() before a planned exit sends them.
 *
 * The table in stats.c gives each id its metric name, labels, help text
 * and kind; ids are the wire format between a child and the master of the
 * same build, nothing else.
 */
#ifndef POSTERN_STATS_H
#define POSTERN_STATS_H

#include <stdint.h>

#include "ipc.h"

#define STATS_FLUSH_MS 200

enum stat_id {
	/* counters: queued */
	STAT_MSG_RECEIVED = 0,
	STAT_MSG_DELIVERED,
	STAT_MSG_BOUNCED,
	STAT_MSG_DEFERRED,
	/* counters: deliverd (and queued for outcomes it decides) */
	STAT_RCPT_DELIVERED,
	STAT_RCPT_DEFERRED,
	STAT_RCPT_BOUNCED,
	/* counters: smtpd */
	STAT_SMTP_CONN_TOTAL,
	STAT_SMTP_REFUSED_MAXCONN,
	STAT_SMTP_REFUSED_PERIP,
	STAT_SMTP_REJECTED_RCPT,
	STAT_SMTP_REJECTED_SIZE,
	STAT_SMTP_REJECTED_SPOOL,
	STAT_SMTP_REJECTED_DATA,
	STAT_SMTP_TOO_MANY_ERRORS,
	STAT_SMTP_ACCEPTED,
	/* delivery latency histogram (deliverd): one counter per bucket (not
	 * cumulative on the wire; the master renders cumulative), and the sum */
	STAT_LAT_BUCKET0,
	STAT_LAT_BUCKET_LAST = STAT_LAT_BUCKET0 + 10,   /* +Inf */
	STAT_LAT_SUM_MS,
	/* gauges */
	STAT_GAUGE_FIRST,
	STAT_SMTP_CONN_CURRENT = STAT_GAUGE_FIRST,   /* smtpd; zeroed when it exits */
	STAT_QUEUE_ACTIVE,                           /* queued, from its message table */
	STAT_QUEUE_DEFERRED,
	STAT_QUEUE_HELD,
	STAT_QUEUE_OLDEST,                           /* arrival (unix time) of the oldest; 0 none */
	STAT_MAX
};

#define STAT_LAT_NBUCKETS (STAT_LAT_BUCKET_LAST - STAT_LAT_BUCKET0 + 1)

struct stat_def {
	const char *name;          /* metric family, e.g. postern_messages_total */
	const char *labels;        /* e.g. outcome="delivered", or "" */
	const char *help;
	int gauge;
};

/* The definition of id (id < STAT_MAX). */
const struct stat_def *stats_def(int id);
/* Upper bound in seconds of latency bucket i (< STAT_LAT_NBUCKETS - 1). */
double stats_lat_bound(int i);

/* Children: where to send (the master channel; NULL disables sending). */
void stats_init(struct ipc_chan *master);
void stats_add(int id, uint64_t n);
void stats_set(int id, uint64_t v);
/* Count one delivery that took `seconds` from arrival. */
void stats_latency(double seconds);
/* Send what is pending now (before a planned exit). */
void stats_flush(void);

#endif
