/*
 * privs - every uid/gid change in postern lives here (one grep finds them).
 *
 * privs_drop(): setgroups, setresgid, setresuid to the configured user,
 * then verify that regaining root fails.  Called by each child right
 * after it has opened what needs privileges (config, logs, spool dir).
 * When not running as root it does nothing: an unprivileged postern runs
 * entirely as the invoking user (tests, `make run` as a normal user).
 */
#ifndef POSTERN_PRIVS_H
#define POSTERN_PRIVS_H

#include <sys/types.h>

/* Look up user; -1 with err filled if it does not exist. */
int privs_lookup(const char *user, uid_t *uid, gid_t *gid, char *err, size_t errlen);
/* Drop to user if root.  Fatal (EX_OSERR/EX_CONFIG) on any failure. */
void privs_drop(const char *user);

#endif
