/*
 * check_relay - `postern check relay`: a dry run against each smarthost.
 *
 * For relay.host and every relay.fallback entry: connect (honouring
 * relay.tls: none, opportunistic, required, implicit), show the banner and
 * the EHLO capabilities, STARTTLS with protocol, cipher, the certificate's
 * subject, issuer and expiry and the verification result (relay.verify,
 * relay.ca_file), AUTH with relay.username and relay.password_file (PLAIN
 * preferred, else LOGIN; only under TLS unless relay.tls = "none"), then
 * QUIT without sending mail.  Each step prints "ok" or "FAILED: why".
 * A small blocking client: poll() bounds every connect
 * (queue.connect_timeout) and reply (queue.reply_timeout).
 * Exit status: 0 only if every host passed every step; 1 otherwise;
 * 78 (EX_CONFIG) for a bad configuration.
 */
#ifndef POSTERN_CHECK_RELAY_H
#define POSTERN_CHECK_RELAY_H

int check_relay_main(const char *conf_path);

#endif
