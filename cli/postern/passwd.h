/*
 * passwd - `postern passwd [-f FILE] NAME`: make an smtpd.auth_users line.
 *
 * The password is read from stdin (one line; on a tty without echo and
 * asked twice), hashed with crypt(3) SHA-512 ("$6$", a 16-character salt
 * from getrandom) and printed as "NAME:$6$...".  With -f FILE, or when
 * smtpd.auth_users is configured and writable, NAME's line in that file is
 * added or replaced atomically: a temp file in the same directory, fsync,
 * rename, with the old file's mode and owner (0600 for a new file).
 * The rename gives the file a new inode: smtpd re-reads it on `postern
 * reload` only if its unprivileged user may open the path, else after
 * `postern restart smtpd`.
 * Names with ':' or control characters are refused (they would break the
 * file's format or its log lines).
 * Exit status: 0 ok, 1 failure, 64 (EX_USAGE) a bad name.
 */
#ifndef POSTERN_PASSWD_H
#define POSTERN_PASSWD_H

/* conf_path may be NULL/missing: then only -f FILE or stdout is used. */
int passwd_main(const char *conf_path, int argc, char **argv);

#endif
