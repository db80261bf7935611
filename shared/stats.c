#include "stats.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

static const struct stat_def defs[STAT_MAX] = {
	[STAT_MSG_RECEIVED] = { "postern_messages_total", "event=\"received\"",
	                        "Messages by event: received (taken into the queue), delivered "
	                        "(every recipient delivered), bounced (a recipient failed), "
	                        "deferred (an attempt left recipients for a retry)", 0 },
	[STAT_MSG_DELIVERED] = { "postern_messages_total", "event=\"delivered\"", NULL, 0 },
	[STAT_MSG_BOUNCED] = { "postern_messages_total", "event=\"bounced\"", NULL, 0 },
	[STAT_MSG_DEFERRED] = { "postern_messages_total", "event=\"deferred\"", NULL, 0 },
	[STAT_RCPT_DELIVERED] = { "postern_recipients_total", "outcome=\"delivered\"",
	                          "Delivery attempts per recipient by outcome", 0 },
	[STAT_RCPT_DEFERRED] = { "postern_recipients_total", "outcome=\"deferred\"", NULL, 0 },
	[STAT_RCPT_BOUNCED] = { "postern_recipients_total", "outcome=\"bounced\"", NULL, 0 },
	[STAT_SMTP_CONN_TOTAL] = { "postern_smtp_connections_total", "",
	                           "SMTP connections accepted by smtpd", 0 },
	[STAT_SMTP_REFUSED_MAXCONN] = { "postern_smtp_connections_refused_total",
	                                "reason=\"max_connections\"",
	                                "SMTP connections refused before the banner, by reason", 0 },
	[STAT_SMTP_REFUSED_PERIP] = { "postern_smtp_connections_refused_total",
	                              "reason=\"max_connections_per_ip\"", NULL, 0 },
	[STAT_SMTP_REJECTED_RCPT] = { "postern_smtp_rejected_total", "reason=\"recipient\"",
	                              "SMTP commands or messages refused, by reason", 0 },
	[STAT_SMTP_REJECTED_SIZE] = { "postern_smtp_rejected_total", "reason=\"size\"", NULL, 0 },
	[STAT_SMTP_REJECTED_SPOOL] = { "postern_smtp_rejected_total", "reason=\"spool\"", NULL, 0 },
	[STAT_SMTP_REJECTED_DATA] = { "postern_smtp_rejected_total", "reason=\"data\"", NULL, 0 },
	[STAT_SMTP_TOO_MANY_ERRORS] = { "postern_smtp_rejected_total", "reason=\"too_many_errors\"",
	                                NULL, 0 },
	[STAT_SMTP_ACCEPTED] = { "postern_smtp_messages_accepted_total", "",
	                         "Messages smtpd answered 250 for", 0 },
	[STAT_LAT_SUM_MS] = { "postern_delivery_latency_seconds", "", NULL, 0 },
	[STAT_SMTP_CONN_CURRENT] = { "postern_smtp_connections", "", "Open SMTP sessions", 1 },
	[STAT_QUEUE_ACTIVE] = { "postern_queue_messages", "state=\"active\"",
	                        "Messages in the queue by state (queued's view)", 1 },
	[STAT_QUEUE_DEFERRED] = { "postern_queue_messages", "state=\"deferred\"", NULL, 1 },
	[STAT_QUEUE_HELD] = { "postern_queue_messages", "state=\"held\"", NULL, 1 },
	[STAT_QUEUE_OLDEST] = { "postern_queue_oldest_message_age_seconds", "",
	                        "Age of the oldest message in the queue (0 if empty)", 1 },
};

static const double lat_bounds[STAT_LAT_NBUCKETS - 1] = { 1, 5, 15, 60, 300, 900, 3600, 14400, 86400, 432000 };

static struct ipc_chan *chan;
static uint64_t pend[STAT_MAX];
static unsigned char dirty[STAT_MAX];
static unsigned char known[STAT_MAX];   /* gauge sent at least once */
static struct ev_timer timer;
static int inited;

const struct stat_def *stats_def(int id)
{
	static const struct stat_def bucket = { "postern_delivery_latency_seconds", "",
	                                        "Time from arrival to delivery, per delivered recipient",
	                                        0 };
	if (id >= STAT_LAT_BUCKET0 && id <= STAT_LAT_BUCKET_LAST)
		return &bucket;
	return &defs[id];
}

double stats_lat_bound(int i)
{
	return lat_bounds[i];
}

static void on_timer(void *arg)
{
	(void)arg;
	stats_flush();
}

void stats_init(struct ipc_chan *master)
{
	chan = master;
	ev_timer_init(&timer, on_timer, NULL);
	/* Every exit (stop, log_fatal) sends what is pending. */
	if (!inited)
		atexit(stats_flush);
	inited = 1;
}

static void touch(int id)
{
	dirty[id] = 1;
	if (inited && !ev_timer_armed(&timer))
		ev_timer_add(&timer, STATS_FLUSH_MS);
}

void stats_add(int id, uint64_t n)
{
	if (id < 0 || id >= STAT_GAUGE_FIRST)
		log_panic("event=panic error=\"stats_add on a gauge or bad id %d\"", id);
	pend[id] += n;
	touch(id);
}

void stats_set(int id, uint64_t v)
{
	if (id < STAT_GAUGE_FIRST || id >= STAT_MAX)
		log_panic("event=panic error=\"stats_set on a counter or bad id %d\"", id);
	if (known[id] && pend[id] == v)
		return;
	known[id] = 1;
	pend[id] = v;
	touch(id);
}

void stats_latency(double seconds)
{
	int i;

	if (seconds < 0)
		seconds = 0;
	for (i = 0; i < STAT_LAT_NBUCKETS - 1; i++)
		if (seconds <= lat_bounds[i])
			break;
	stats_add(STAT_LAT_BUCKET0 + i, 1);
	stats_add(STAT_LAT_SUM_MS, (uint64_t)(seconds * 1000.0));
}

void stats_flush(void)
{
	struct ipc_msg m;
	uint32_t n = 0;

	if (inited)
		ev_timer_del(&timer);
	for (int i = 0; i < STAT_MAX; i++)
		n += dirty[i];
	if (n == 0 || chan == NULL)
		return;
	ipc_msg_init(&m, IPC_STATS);
	ipc_put_u32(&m, n);
	for (int i = 0; i < STAT_MAX; i++) {
		if (!dirty[i])
			continue;
		ipc_put_u32(&m, (uint32_t)i);
		ipc_put_u64(&m, pend[i]);
		dirty[i] = 0;
		if (i < STAT_GAUGE_FIRST)
			pend[i] = 0;
	}
	ipc_send(chan, &m, -1);
}
