/*
 * fuzz-smtp-command.c — libFuzzer entry point for smtp_command_parse().
 *
 * The input is one command line without its CRLF, exactly as smtpd's line
 * reader hands it over (not NUL-terminated). Whatever parses goes on to the
 * parser smtpd would call next: MAIL/RCPT arguments to smtp_path_parse(),
 * BDAT arguments to smtp_bdat_parse(), HELO/EHLO arguments to
 * smtp_domain_valid(). Checks the contract of smtp.h: args always points
 * inside the line, accepted lines hold no control character but HT, and
 * args carry no leading or trailing SP/HT.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "lib-smtp/smtp.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *line = fuzz_copy(data, size, 0);
	struct smtp_command cmd;
	const char *error = NULL;

	int ret = smtp_command_parse(line, size, &cmd, &error);
	FUZZ_CHECK(ret == 0 || ret == -1);
	FUZZ_CHECK(cmd.args >= line && cmd.args <= line + size);
	FUZZ_CHECK(cmd.args_len <= (size_t)(line + size - cmd.args));
	FUZZ_CHECK(smtp_cmd_name(cmd.cmd) != NULL);
	if (ret < 0) {
		FUZZ_CHECK(error != NULL && error[0] != '\0');
		goto out;
	}

	FUZZ_CHECK(size > 0 && size <= SMTP_COMMAND_LINE_MAX - 2);
	for (size_t i = 0; i < size; i++)
		FUZZ_CHECK((unsigned char)line[i] >= 0x20 ? line[i] != 0x7f : line[i] == '\t');
	if (cmd.args_len > 0) {
		FUZZ_CHECK(cmd.args[0] != ' ' && cmd.args[0] != '\t');
		FUZZ_CHECK(cmd.args[cmd.args_len - 1] != ' ' &&
			   cmd.args[cmd.args_len - 1] != '\t');
	}

	switch (cmd.cmd) {
	case SMTP_CMD_MAIL:
	case SMTP_CMD_RCPT: {
		struct smtp_path_args *pa = malloc(sizeof(*pa));
		FUZZ_CHECK(pa != NULL);
		if (smtp_path_parse(cmd.args, cmd.args_len, cmd.cmd == SMTP_CMD_MAIL, pa,
				    &error) == 0) {
			char out[SMTP_ADDRESS_MAX * 4 + 8];
			FUZZ_CHECK(pa->nparams <= SMTP_PARAMS_MAX);
			(void)smtp_address_format(&pa->addr, out, sizeof(out));
			for (unsigned i = 0; i < pa->nparams; i++) {
				char value[sizeof(pa->params[i].value)];
				(void)smtp_xtext_decode(pa->params[i].value, value, sizeof(value));
				FUZZ_CHECK(smtp_param_find(pa, pa->params[i].keyword) != NULL);
			}
		} else {
			FUZZ_CHECK(error != NULL && strncmp(error, "501 ", 4) == 0);
		}
		free(pa);
		break;
	}
	case SMTP_CMD_BDAT: {
		uint64_t chunk = 0;
		bool last = false;
		if (smtp_bdat_parse(cmd.args, cmd.args_len, &chunk, &last, &error) < 0)
			FUZZ_CHECK(error != NULL && strncmp(error, "501 ", 4) == 0);
		break;
	}
	case SMTP_CMD_HELO:
	case SMTP_CMD_EHLO:
		(void)smtp_domain_valid(cmd.args, cmd.args_len);
		break;
	default:
		break;
	}
out:
	free(line);
	return 0;
}
