/*
 * policy - who may send mail to whom: the open-relay line.
 *
 * A recipient is accepted when its domain is one we deliver locally
 * (local.domains) or relay for (smtpd.relay_domains), or when the client
 * is trusted (smtpd.mynetworks, or authenticated with AUTH).
 * Routing syntax that could make the next hop relay for us is refused for
 * untrusted clients even to our own domains: '%' and '!' in the local part
 * and quoted local parts containing '@' (the classic sendmail-era relay
 * holes).  Address literals are never a relay domain.
 */
#include "smtpd.h"
#include "log.h"
#include "str.h"

#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

static struct cidr *nets;
static size_t nnets;

int policy_load(void)
{
	free(nets);
	nets = xcalloc(cfg->smtpd.mynetworks.n ? cfg->smtpd.mynetworks.n : 1, sizeof(*nets));
	nnets = 0;
	for (size_t i = 0; i < cfg->smtpd.mynetworks.n; i++) {
		if (cidr_parse(cfg->smtpd.mynetworks.v[i], &nets[nnets]) == -1) {
			log_error("event=config_error error=\"bad mynetworks entry\" value=%s",
			          log_q(cfg->smtpd.mynetworks.v[i]));
			return -1;
		}
		nnets++;
	}
	return 0;
}

int policy_client_trusted(const struct sockaddr *sa)
{
	for (size_t i = 0; i < nnets; i++)
		if (cidr_match(&nets[i], sa))
			return 1;
	return 0;
}

static int is_relay_domain(const char *d)
{
	for (size_t i = 0; i < cfg->smtpd.relay_domains.n; i++)
		if (str_casecmp(cfg->smtpd.relay_domains.v[i], d) == 0)
			return 1;
	return 0;
}

int policy_rcpt(const struct session *s, const struct addr *rcpt, const char **reply)
{
	int trusted = s->auth_user[0] != '\0' || policy_client_trusted((const struct sockaddr *)&s->peer);

	if (trusted)
		return 0;
	if (rcpt->domain[0] == '\0')   /* <postmaster> */
		return 0;
	if (strpbrk(rcpt->local, "%!") != NULL || (rcpt->is_quoted && strchr(rcpt->local, '@'))) {
		*reply = "554 5.7.1 Routing syntax (%, ! or @ in the local part) is not accepted";
		return -1;
	}
	if (!rcpt->is_literal && (config_is_local_domain(cfg, rcpt->domain) || is_relay_domain(rcpt->domain)))
		return 0;
	*reply = "554 5.7.1 Relay access denied";
	return -1;
}

/*
 * Free space check for MAIL (DESIGN.md): queue.min_free bytes, by default
 * 1.5 x max_message_size, or the announced SIZE= if that is larger.
 */
int policy_has_room(uint64_t announced)
{
	struct statvfs sv;
	uint64_t need = cfg->queue.min_free ? cfg->queue.min_free : cfg->smtpd.max_message_size / 2 * 3;

	if (announced > need)
		need = announced;
	if (statvfs(".", &sv) == -1)
		return 1;   /* cannot tell: the write path still reports ENOSPC */
	return (uint64_t)sv.f_bavail * sv.f_frsize >= need;
}

