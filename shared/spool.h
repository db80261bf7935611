/*
 * spool - the on-disk queue: file formats, names and every state change.
 *
 * All paths are relative to the spool directory, which each daemon makes
 * its working directory while still privileged (so an unprivileged child
 * needs no search permission on the spool's parents).
 *
 *   tmp/       S1  being written; never acknowledged; purged by the master
 *                  at start (a writer that loses its file answers 451)
 *   incoming/  S2  complete and fsynced; the client may have had its 250
 *   queue/     S3  owned by queued: immutable message files
 *   state/         per-message delivery state, owned by queued
 *   corrupt/       files that failed to parse; kept for the admin
 *   private/       unix sockets of the daemons (private/queued)
 *   drop/      S0  postern-sendmail drops, mode 01733 owned by `user`: any
 *                  local user may create files here but not list them, nor
 *                  (sticky) remove another's; untrusted input for queued
 *
 * Transitions (the only ones; all renames are within one filesystem):
 *
 *   T1 submit   (smtpd): create tmp/Q O_EXCL, write header, data and
 *               end marker, close, rename tmp/Q incoming/Q, then take a
 *               group-commit ticket (shared/gcommit.h): one syncfs() of the
 *               spool's file system makes this file's data and both
 *               directory entries durable, together with every message
 *               finished meanwhile.  Only once that has returned may the
 *               client get 250.  queued hears of Q at once, so delivery
 *               can overlap the flush: until the 250 the client still
 *               holds the message, so a crash meanwhile can make it send
 *               the message again (a duplicate), never lose it; and a file
 *               delivered and unlinked before the flush never reaches the
 *               disk.  If the flush fails, incoming/Q is unlinked and the
 *               client gets 451 (if queued had already taken Q, it is
 *               delivered too: again a duplicate at worst).  The
 *               one-at-a-time form (spool_submit_commit: DSNs, sendmail
 *               pickup) fsyncs the file before the rename and incoming/
 *               after it.
 *   T2 takeover (queued): parse and re-validate incoming/Q, rename it to
 *               queue/Q.  Nothing is written or synced: a message without
 *               a state file has every recipient pending, so a rename lost
 *               in a crash only makes queued take Q over again.
 *   T3 corrupt  (queued): rename X/Q corrupt/Q; fsync both dirs; log it.
 *   T4 finish   (queued): every recipient delivered or bounced: unlink
 *               queue/Q, then state/Q if Q has one.  Nothing is synced: if
 *               a crash loses the unlinks, the message comes back and is
 *               delivered again (at-least-once); journalling file systems
 *               keep the two unlinks in order, so the state never goes
 *               while its message stays.
 *   T5 state    (queued): write tmp/Q.state, rename to state/Q, then a
 *               group commit (gcommit.h, queued's own thread) makes it
 *               durable without blocking queued's loop.  Only when there
 *               is something to remember after a delivery attempt: a
 *               recipient deferred (the retry time, attempts, the last
 *               error), a DSN sent, hold/release.  Nothing waits for that
 *               commit: losing a state in a crash repeats a delivery
 *               attempt or a DSN, it never loses mail.  A message
 *               delivered to every recipient at its first attempt never
 *               has a state file.
 *   T6 drop     (postern-sendmail, any local user): create drop/.R.tmp
 *               (R = 32 hex digits from getrandom(), O_EXCL, mode 0644 so
 *               queued can read it: the unlistable directory and the
 *               unguessable name keep other users out), write the drop
 *               file, fsync, rename to drop/R (never replacing), fsync
 *               (drop/), or syncfs() for a user who cannot open drop/.
 *               Only now does the command exit 0.
 *   T7 pickup   (queued/pickup.c): open drop/R O_NOFOLLOW,
 *               check it (regular file, one link, owner = uid= or root, size),
 *               parse and re-validate it as hostile input, build the
 *               message, T1 it into incoming/ (origin=sendmail), T2, and
 *               only then unlink drop/R and fsync(drop/).  A crash between
 *               T1 and the unlink gives a duplicate (at-least-once), never
 *               a loss.  A drop that fails validation: T3 to corrupt/drop.R.
 *
 * Recovery (queued at start; any process may have been killed anywhere):
 *   incoming/Q, no state/Q  -> T2 as usual
 *   incoming/Q and state/Q  -> left by older versions whose T2 wrote a
 *                              state first: T2, keeping the state
 *   incoming/Q torn         -> its commit never returned (power cut), so
 *                              no 250 was given: T3 like any torn file
 *   queue/Q and state/Q     -> schedule from the state
 *   queue/Q, no state/Q     -> every recipient pending (T2, T4)
 *   state/Q alone           -> T4 was cut: unlink state/Q
 *   tmp/Q                   -> S1, never acknowledged: discarded by master
 *   drop/R                  -> T7 (at start, on inotify, and every 5 s)
 *   drop/.R.tmp             -> T6 was cut, never acknowledged: queued
 *                              removes it (and logs it) once a day old
 *
 * Message file (queue/Q): text header, blank line, message data exactly
 * as the client sent it after dot-unstuffing (CRLF line ends), and a
 * trailer line "POSTERN-END <datalen>\n".  A file whose trailer is missing
 * or whose length disagrees is torn: it goes to corrupt/ (T3), it is never
 * delivered half.
 *
 *   POSTERN-QUEUE 1
 *   qid=...  arrival=<unix time>  origin=smtp|sendmail|bounce
 *   client=<ip>  helo=<name>  proto=ESMTP  body=7bit|8bitmime  smtputf8=0|1
 *   auth=<user or empty>  sender=<address or empty for <>>
 *   rcpt=<address>           (one line per recipient, order = index)
 *
 * State file (state/Q): "POSTERN-STATE 1", then key=value lines:
 *   attempts=N next=<unix time> warned=0|1 held=0|1
 *   r=<index> <pending|deferred|delivered|bounced> <attempts> <last unix time>
 *   e=<index> <last reply or error text, printable ASCII>
 *   n=<index>                (the sender was told about this bounce: a DSN
 *                             was queued, or suppressed for a null sender)
 *   "POSTERN-END"
 *
 * Drop file (drop/R), written by an untrusted user: queued checks every
 * line again; unknown or repeated keys and control bytes are errors.
 *
 *   POSTERN-DROP 1
 *   uid=<getuid() of the submitter; the file's owner, unless that is root>
 *   time=<unix time of submission>           (for a missing Date:)
 *   sender=<-f address, "<>" for the null sender>  (absent: login@hostname)
 *   fullname=<-F display name>               (absent: the GECOS name)
 *   t=0|1                                    (-t: To:/Cc:/Bcc: recipients)
 *   rcpt=<address>                           (one per argument recipient)
 *   <blank line>
 *   message as read from stdin (after "." handling, line ends as given)
 *   POSTERN-END <length of the message>
 *
 * Every value is checked on read: addresses with addr_parse_mailbox(),
 * numbers with str_to_u64(); a control byte anywhere is a parse error.
 */
#ifndef POSTERN_SPOOL_H
#define POSTERN_SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "addr.h"

#define QID_MIN 14
#define QID_MAX 32
#define SPOOL_HDR_MAX (1024 * 1024)   /* header of a message file */
#define SPOOL_RCPT_MAX 100000
#define SPOOL_ERR_MAX 400             /* stored reply text per recipient */

#define SPOOL_TMP "tmp"
#define SPOOL_INCOMING "incoming"
#define SPOOL_QUEUE "queue"
#define SPOOL_STATE "state"
#define SPOOL_CORRUPT "corrupt"
#define SPOOL_PRIVATE "private"
#define SPOOL_QUEUED_SOCK "private/queued"
#define SPOOL_DROP "drop"
#define SPOOL_DROP_MODE 01733
#define SPOOL_DROP_MAGIC "POSTERN-DROP 1\n"
#define SPOOL_DROP_END "POSTERN-END "
#define SPOOL_DROP_NAME_LEN 32        /* hex digits of a drop file's name */

enum rcpt_state { RS_PENDING = 0, RS_DEFERRED, RS_DELIVERED, RS_BOUNCED };

struct spool_env {
	char qid[QID_MAX];
	int64_t arrival;
	char origin[16];
	char client[64];
	char helo[256];
	char proto[16];
	char body[16];
	int smtputf8;
	char auth[256];
	char sender[ADDR_PATH_MAX + 1];
	char **rcpt;              /* owned; spool_env_free() */
	size_t nrcpt;
	uint64_t data_off;        /* offset of message data in the file */
	uint64_t data_len;
};

struct spool_rcpt_state {
	int state;
	uint32_t attempts;
	int64_t last;
	int notified;             /* DSN queued (or suppressed) for this bounce */
	const char *error;        /* last reply or error, never NULL: interned
	                             (shared/strpool.h), set with spool_rcpt_set_error() */
};

struct spool_state {
	char qid[QID_MAX];
	uint32_t attempts;
	int64_t next;
	int warned;
	int held;
	size_t nrcpt;
	struct spool_rcpt_state *r;   /* owned; spool_state_free() */
};

/* Is s a syntactically valid queue id (so safe as a file name)? */
int spool_qid_valid(const char *s);
const char *spool_rcpt_state_name(int st);

/* Master: create the directory tree (owner uid/gid when root).  */
int spool_init(const char *spool_dir, uid_t uid, gid_t gid, char *err, size_t errlen);
/* Master at start: discard S1 files. Returns count removed. */
int spool_purge_tmp(void);

/* --- T1: submission (smtpd, sendmail pickup) --- */

struct spool_writer {
	int fd;
	char qid[QID_MAX];
	uint64_t data_len;
	int failed;               /* a write failed; commit will refuse */
	int err;                  /* errno of the failure */
	char wbuf[16384];         /* one per client in DATA: small, so 50
	                             concurrent clients cost 0.8 MiB, not 3.2 */
	size_t wlen;
};

/* Create tmp/QID; fills w->qid.  -1 with errno set. */
int spool_submit_open(struct spool_writer *w);
/* Write the header from env (qid is taken from w). */
int spool_submit_header(struct spool_writer *w, const struct spool_env *env);
int spool_submit_write(struct spool_writer *w, const void *p, size_t n);
/* T1 all at once: trailer, fsync, rename into incoming/, fsync dir.
 * -1 with errno.  For writers off the hot path (DSNs, sendmail pickup). */
int spool_submit_commit(struct spool_writer *w);
/* T1 for a group commit: trailer, rename into incoming/, no sync; w->fd
 * stays open for the caller to hand to gcommit_ticket() (which closes it).
 * The file is not durable until that ticket's flush has completed
 * (shared/gcommit.h); only then may the client get 250.  -1 with errno
 * (the tmp/ file is left for spool_submit_abort()). */
int spool_submit_finish(struct spool_writer *w);
/* The group commit failed: remove incoming/QID so the 451 is true. */
void spool_submit_withdraw(const char *qid);
void spool_submit_abort(struct spool_writer *w);

/* --- reading message files --- */

/* Open dir/qid read-only and parse its header and trailer. -1: err says why,
 * and *corrupt is set when the file exists but is malformed. */
int spool_msg_open(const char *dir, const char *qid, struct spool_env *env, int *corrupt,
                   char *err, size_t errlen);
/* Parse an already-open message file (fd is not closed). */
int spool_msg_parse(int fd, struct spool_env *env, char *err, size_t errlen);
void spool_env_free(struct spool_env *env);

/* --- state files (queued only) --- */
/* T5.  sync: fsync the file and state/ too; else the caller makes it
 * durable with a group commit (queued). */
int spool_state_write(const struct spool_state *st, int sync);
/* -1 with *missing=1 if there is no state file; else err says why. */
int spool_state_read(const char *qid, size_t nrcpt, struct spool_state *st, int *missing,
                     char *err, size_t errlen);
void spool_state_init(struct spool_state *st, const char *qid, size_t nrcpt);
/* Replace r's error text (at most SPOOL_ERR_MAX bytes kept). */
void spool_rcpt_set_error(struct spool_rcpt_state *r, const char *text);
void spool_state_free(struct spool_state *st);

/* --- T2/T3/T4 helpers --- */
int spool_move(const char *from_dir, const char *to_dir, const char *qid);
int spool_fsync_dir(const char *dir);
/* rename dir/QID without any sync (T2). */
int spool_rename(const char *from_dir, const char *to_dir, const char *qid);
/* T4: has_state says whether state/QID may exist. */
int spool_remove(const char *qid, int has_state);

#endif
