/*
 * master - the supervisor: binds sockets, spawns and restarts the
 * children, answers the control socket.  Internal interfaces between
 * master/main.c, spawn.c, control.c and reload.c.
 */
#ifndef POSTERN_MASTER_H
#define POSTERN_MASTER_H

#include <sys/types.h>
#include <time.h>

#include "config.h"
#include "event.h"
#include "ipc.h"

enum role { ROLE_SMTPD = 0, ROLE_QUEUED, ROLE_DELIVERD, ROLE_MAX };
/* CH_UNUSED: a deliverd slot the on-demand pool does not use now (never
 * started, or its deliverd retired); not shown by status or metrics. */
enum child_state { CH_STARTING = 0, CH_READY, CH_WAITING, CH_STOPPED, CH_UNUSED };

struct child {
	int role;
	int slot;                  /* index within the role (deliverd pool) */
	pid_t pid;                 /* 0 when not running */
	int state;
	time_t started;            /* wall clock, for uptime */
	uint64_t started_ms;       /* monotonic, for crash-loop detection */
	unsigned restarts;
	unsigned backoff_ms;
	int restart_requested;     /* `postern restart`: respawn now, no backoff */
	int retiring;              /* deliverd sent IPC_RETIRED: its exit 0 is not a death */
	unsigned retired_idle;     /* the idle seconds it reported */
	char last_exit[64];
	uint64_t deaths[5];        /* monotonic ms of the last unexpected exits */
	struct ipc_chan *ch;
	struct ev_timer timer;     /* delayed respawn */
};

struct master {
	struct config *cfg;
	char config_path[CONFIG_PATH_MAX];
	char libexec[CONFIG_PATH_MAX];
	int listen_fd[CONFIG_LISTEN_MAX];
	size_t nlisten;
	struct child *children;
	size_t nchildren;
	int stopping;
	int ready_announced;
	int detach_fd;             /* stderr to close once ready (postern start) */
	int daemon;                /* started with -d */
	time_t started;
	uint64_t stop_deadline_ms;
	struct ev_timer stop_timer;
};

extern struct master M;

const char *role_name(int role);
int role_parse(const char *s);

/* spawn.c */
void spawn_all(void);
int child_in_use(const struct child *c);      /* not an unused deliverd slot */
void spawn_child(struct child *c);
void spawn_reap(void);
void spawn_restart_role(int role);
void spawn_stop_all(void);
int spawn_all_stopped(void);
void spawn_kill_all(void);

/* control.c */
int control_open(const char *run_dir, char *err, size_t errlen);
void control_close(void);
void control_admin_reply(struct ipc_msg *m);
void control_admin_abort(void);

/* metrics.c: counters from the children, the Prometheus endpoint */
int metrics_open(char *err, size_t errlen);   /* binds metrics.listen, if set */
void metrics_close(void);
void metrics_apply(struct child *c, struct ipc_msg *m);
void metrics_child_exited(struct child *c);

/* reload.c */
void reload_config(void);

/* notify.c: sd_notify over $NOTIFY_SOCKET (no-ops when it is unset) */
int notify_open(void);                        /* reads and unsets $NOTIFY_SOCKET */
void notify_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void notify_ready(const char *status);        /* READY=1 + STATUS= */
void notify_reloading(void);                  /* RELOADING=1 + MONOTONIC_USEC= */
void notify_stopping(void);                   /* STOPPING=1 */
void notify_close(void);

/* main.c */
void master_check_ready(void);
void master_shutdown(void);

#endif
