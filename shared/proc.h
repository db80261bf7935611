/*
 * proc - what every postern child daemon does at start, in one place.
 *
 * The master execs each child with its config path (-c FILE) and the
 * master channel on fd PROC_MASTER_FD.  proc_child_init() then: loads
 * the config (the master already validated it, so an error here is a
 * fatal EX_CONFIG), opens the component's log, makes the spool directory
 * the working directory, asks the kernel to SIGTERM us when the master
 * dies, and drops privileges.  Anything a child must open as root (TLS
 * key, maildir root) it opens in its `before_drop` callback.
 *
 * Signals arrive through a signalfd registered with the event loop, so a
 * signal can never be lost between a flag check and epoll_wait().
 */
#ifndef POSTERN_PROC_H
#define POSTERN_PROC_H

#include <signal.h>

#include "config.h"
#include "ipc.h"

#define PROC_MASTER_FD 3
#define PROC_LISTEN_FD0 4   /* smtpd: listeners follow, see POSTERN_LISTEN */

/* Returns the loaded config (owned by the caller; config_free()). */
struct config *proc_child_init(const char *component, int argc, char **argv,
                               void (*before_drop)(struct config *));
/* Route TERM/INT/HUP/USR1/CHLD to cb via the event loop; ignore PIPE.
 * Needs ev_init() first. */
void proc_signals_install(void (*cb)(int signo));
/* In a forked child before exec: default dispositions, nothing blocked. */
void proc_signals_reset(void);
/* Tell the master we serve (and log event=ready). */
void proc_ready(struct ipc_chan *master);
/* Reload the config for SIGHUP: NULL (and a warning) if it does not load. */
struct config *proc_reload(const struct config *old);
/* SIGHUP in a child: replace *cfg by the reloaded file; 1 if it changed. */
int proc_reload_swap(struct config **cfg);
/*
 * The channel to the master (fd PROC_MASTER_FD).  on_msg may be NULL when
 * the master sends this child nothing: any message is then a protocol
 * violation (fatal).  When the master goes away the child exits.
 */
struct ipc_chan *proc_master_channel(ipc_msg_cb *on_msg);
/* Connect to queued (spool/private/queued) and say HELLO as role.  NULL
 * (logged at debug) when queued is not there yet: the caller retries. */
struct ipc_chan *proc_connect_queued(const char *role, ipc_msg_cb *on_msg, ipc_close_cb *on_close);

/* The master writes this on stderr, the pipe `postern start` reads, when
 * every component is ready and it detaches: end of file without it means
 * the master died, even before waitpid() can see it. */
#define PROC_READY_MARK "postern-master-ready\n"

#endif
