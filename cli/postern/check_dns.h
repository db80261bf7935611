/*
 * check_dns - `postern check mx DOMAIN` and `postern check dnsbl [IP]`.
 *
 * Both load the configuration (dns.*, smtpd.dnsbl, queue.connect_timeout)
 * and run their own event loop around the asynchronous resolver (dns.h).
 * Exit status: 0 deliverable / not listed; 1 not deliverable (permanent) /
 * listed; 75 (EX_TEMPFAIL) a temporary DNS failure; 78 a bad config.
 */
#ifndef POSTERN_CHECK_DNS_H
#define POSTERN_CHECK_DNS_H

int check_mx_main(const char *conf_path, const char *domain);
int check_dnsbl_main(const char *conf_path, const char *ip);   /* ip NULL: this host's */

#endif
