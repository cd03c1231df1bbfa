#!/bin/sh
# Builds Postern and runs it in the foreground with a demo instance in
# ./demo (generated config, self-signed certificate, domain example.test,
# user demo@example.test) on unprivileged loopback ports.
set -eu
cd "$(dirname "$0")/.."
BIN=build/postern
DEMO=${POSTERN_DEMO_DIR:-$PWD/demo}

if [ ! -f "$DEMO/postern.conf" ]; then
	"$BIN" init "$DEMO" --domain example.test --hostname mail.example.test \
		--listen-http off >/dev/null
	pw=$(head -c 18 /dev/urandom | base64 | tr -d '/+=' | head -c 20)
	printf '%s\n' "$pw" | "$BIN" -c "$DEMO/postern.conf" user add demo@example.test \
		--password-stdin >/dev/null
	printf '%s\n' "$pw" > "$DEMO/demo-password.txt"
	chmod 600 "$DEMO/demo-password.txt"
fi
pw=$(cat "$DEMO/demo-password.txt")
cat <<INFO

Postern demo instance in $DEMO
  MX (SMTP, STARTTLS offered):   127.0.0.1:2525
  submission (STARTTLS + AUTH):  127.0.0.1:2587
  submissions (implicit TLS):    127.0.0.1:2465
  IMAP (STARTTLS) / IMAPS:       127.0.0.1:2143 / 127.0.0.1:2993
  POP3 (STLS) / POP3S:           127.0.0.1:2110 / 127.0.0.1:2995
  user: demo@example.test   password: $pw
  mail is stored in $DEMO/mail/example.test/demo/ (a Maildir)

Try:
  swaks --server 127.0.0.1:2525 --to demo@example.test
  swaks --server 127.0.0.1:2587 --tls --auth-user demo@example.test \\
        --auth-password '$pw' --from demo@example.test --to demo@example.test
  curl -k --user 'demo@example.test:$pw' 'imaps://127.0.0.1:2993/INBOX;UID=1'
  openssl s_client -quiet -connect 127.0.0.1:2993     (then: a LOGIN demo@example.test ...)
  $BIN -c $DEMO/postern.conf queue list

Stop with Ctrl-C.
INFO
exec "$BIN" -c "$DEMO/postern.conf" serve
