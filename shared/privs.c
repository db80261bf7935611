#include "privs.h"
#include "log.h"
#include "str.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <string.h>
#include <sys/prctl.h>
#include <sysexits.h>
#include <unistd.h>

int privs_lookup(const char *user, uid_t *uid, gid_t *gid, char *err, size_t errlen)
{
	struct passwd *pw;

	errno = 0;
	pw = getpwnam(user);
	if (pw == NULL) {
		str_fmt(err, errlen,
		        "user '%s' does not exist (create it, e.g. useradd --system --no-create-home "
		        "--shell /usr/sbin/nologin %s, or set 'user' in the config)",
		        user, user);
		return -1;
	}
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	return 0;
}

void privs_drop(const char *user)
{
	char err[256];
	uid_t uid;
	gid_t gid;

	if (geteuid() != 0)
		return;
	if (privs_lookup(user, &uid, &gid, err, sizeof(err)) == -1)
		log_fatal(EX_CONFIG, "event=fatal error=%s", log_q(err));
	if (uid == 0)
		log_fatal(EX_CONFIG, "event=fatal error=\"user '%s' is root; choose an unprivileged user\"",
		          user);
	if (setgroups(1, &gid) == -1)
		log_fatal(EX_OSERR, "event=fatal what=setgroups error=%s", log_q(strerror(errno)));
	if (setresgid(gid, gid, gid) == -1)
		log_fatal(EX_OSERR, "event=fatal what=setresgid error=%s", log_q(strerror(errno)));
	if (setresuid(uid, uid, uid) == -1)
		log_fatal(EX_OSERR, "event=fatal what=setresuid error=%s", log_q(strerror(errno)));
	if (setuid(0) != -1 || seteuid(0) != -1)
		log_panic("event=panic error=\"could regain root after dropping privileges\"");
	/* setuid clears the dumpable flag; keep it off so no core dump leaks data. */
	prctl(PR_SET_DUMPABLE, 0);
}
