/*
 * fps-controller: command line (fps-controller --help). Maps every outcome to the fixed exit
 * codes: 0 ok, 1 invalid input, 2 usage, 3 runtime failure.
 */
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "controller.h"
#include "deniedcli.h"
#include "explain.h"
#include "purge.h"
#include "diagnose.h"
#include "fsio.h"
#include "log.h"
#include "state.h"

#define EXIT_INVALID 1
#define EXIT_USAGE   2
#define EXIT_RUNTIME 3

static void usage(FILE *f)
{
	fprintf(f,
	        "usage:\n"
	        "  fps-controller run    --config-dir D --secrets-dir D --state-dir D [--mode supervise|sidecar]\n"
	        "                        [--admin ADDR:PORT] [--log-format text|json] [--log-level LEVEL]\n"
	        "  fps-controller render --config-dir D [--secrets-dir D] --out D\n"
	        "  fps-controller check  --config-dir D [--secrets-dir D]\n"
	        "  fps-controller diagnose [--config-dir D --secrets-dir D] [--json]\n"
	        "  fps-controller keys   (every configuration key, as docs/configuration.md lists them)\n"
	        "  fps-controller denied [--admin ADDR:PORT] [--json]\n"
	        "  fps-controller explain [--config-dir D --secrets-dir D | --admin ADDR:PORT] [--json] HOST[:PORT]\n"
	        "  fps-controller explain [--admin ADDR:PORT] [--json] http://HOST[:PORT]/PATH\n"
	        "  fps-controller purge  [--admin ADDR:PORT] URL   (removes URL from the update cache)\n"
	        "  fps-controller --version | --help\n"
	        "FPS_CONFIG_DIR, FPS_SECRETS_DIR, FPS_STATE_DIR may stand in for the flags.\n"
	        "Exit codes: 0 ok, 1 invalid input, 2 usage, 3 runtime failure.\n");
}

struct args {
	const char *config_dir, *secrets_dir, *state_dir, *out, *admin;
	const char *mode, *log_format, *log_level;
	const char *target; /* explain's HOST[:PORT] */
	bool json;
};

static int parse_args(int argc, char **argv, struct args *a)
{
	static const struct option opts[] = {
	    {"config-dir", required_argument, NULL, 'c'},
	    {"secrets-dir", required_argument, NULL, 's'},
	    {"state-dir", required_argument, NULL, 'S'},
	    {"out", required_argument, NULL, 'o'},
	    {"mode", required_argument, NULL, 'm'},
	    {"admin", required_argument, NULL, 'a'},
	    {"log-format", required_argument, NULL, 'f'},
	    {"log-level", required_argument, NULL, 'l'},
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	memset(a, 0, sizeof(*a));
	a->config_dir = getenv("FPS_CONFIG_DIR");
	a->secrets_dir = getenv("FPS_SECRETS_DIR");
	a->state_dir = getenv("FPS_STATE_DIR");
	optind = 2;
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			a->config_dir = optarg;
			break;
		case 's':
			a->secrets_dir = optarg;
			break;
		case 'S':
			a->state_dir = optarg;
			break;
		case 'o':
			a->out = optarg;
			break;
		case 'm':
			a->mode = optarg;
			break;
		case 'a':
			a->admin = optarg;
			break;
		case 'f':
			a->log_format = optarg;
			break;
		case 'l':
			a->log_level = optarg;
			break;
		case 'j':
			a->json = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			return -1;
		}
	}
	if ((strcmp(argv[1], "explain") == 0 || strcmp(argv[1], "purge") == 0) && optind == argc - 1)
		a->target = argv[optind++];
	if (optind != argc) {
		fprintf(stderr, "fps-controller: unexpected argument '%s'\n", argv[optind]);
		return -1;
	}
	return 0;
}

static int cmd_check(const struct args *a, const struct ctl_paths *paths)
{
	struct fps_config c;
	struct compiled cp;
	struct render_out out;
	struct fps_err e;
	err_clear(&e);
	char buf[1600];
	if (ctl_build(a->config_dir, a->secrets_dir, paths, "/nonexistent-check", &c, &cp, &out, &e) < 0) {
		fprintf(stderr, "%s\n", err_str(&e, buf, sizeof(buf)));
		return EXIT_INVALID;
	}
	ctl_report_entries(&cp, a->config_dir);
	/* Valid, but Squid (running as its own user) could not read it where it is. */
	char why[512];
	if (state_check_squid_access(a->state_dir, NULL, c.hosts_file[0] ? c.hosts_file : NULL, why, sizeof(why)) < 0) {
		fprintf(stderr, "%s: %s\n", a->config_dir, why);
		render_free(&out);
		compile_free(&cp);
		cfg_free(&c);
		return EXIT_INVALID;
	}
	printf("%s: valid: %zu entries (%zu direct, %zu upstream, %zu tunnel), %zu folded, %zu rejected\n",
	       a->config_dir, cp.policy.n_entries, cp.by_route[WL_VIA_DIRECT], cp.by_route[WL_VIA_UPSTREAM],
	       cp.by_route[WL_VIA_TUNNEL], cp.policy.n_folded, cp.n_rejected);
	render_free(&out);
	compile_free(&cp);
	cfg_free(&c);
	return 0;
}

static int cmd_render(const struct args *a, const struct ctl_paths *paths)
{
	struct fps_err e;
	err_clear(&e);
	char buf[1600], out_dir[PATH_MAX];
	if (fsio_mkdirs(a->out, 0755, &e) < 0 || realpath(a->out, out_dir) == NULL) {
		fprintf(stderr, "%s: cannot create output directory\n", a->out);
		return EXIT_RUNTIME;
	}
	struct fps_config c;
	struct compiled cp;
	struct render_out out;
	if (ctl_build(a->config_dir, a->secrets_dir, paths, out_dir, &c, &cp, &out, &e) < 0) {
		fprintf(stderr, "%s\n", err_str(&e, buf, sizeof(buf)));
		return EXIT_INVALID;
	}
	ctl_report_entries(&cp, a->config_dir);
	int rc = 0;
	for (size_t i = 0; i < out.n_files && rc == 0; i++) {
		char path[PATH_MAX + 80], dir[PATH_MAX + 80];
		snprintf(path, sizeof(path), "%s/%s", out_dir, out.files[i].name);
		snprintf(dir, sizeof(dir), "%s", path);
		*strrchr(dir, '/') = '\0';
		if (fsio_mkdirs(dir, 0755, &e) < 0 ||
		    fsio_write_atomic(path, out.files[i].data, out.files[i].len, 0640, (gid_t)-1, &e) < 0)
			rc = EXIT_RUNTIME;
		else
			printf("%s\n", path);
	}
	char errors[PATH_MAX + 16];
	snprintf(errors, sizeof(errors), "%s/errors", out_dir);
	if (rc == 0 && state_link_error_templates(errors, &e) < 0)
		rc = EXIT_RUNTIME;
	if (rc != 0)
		fprintf(stderr, "%s\n", err_str(&e, buf, sizeof(buf)));
	render_free(&out);
	compile_free(&cp);
	cfg_free(&c);
	return rc;
}

int main(int argc, char **argv)
{
	log_init("fps-controller", LOG_FMT_TEXT, LOG_LVL_INFO);
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
		printf("fps-controller %s\n", FPS_VERSION);
		return 0;
	}
	if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(cmd, "keys") == 0) {
		for (const struct cfg_key *k = cfg_keys; k->file; k++)
			printf("%s\t%s\n", k->file, k->key);
		return 0;
	}
	struct args a;
	if (parse_args(argc, argv, &a) < 0) {
		usage(stderr);
		return EXIT_USAGE;
	}
	enum log_format lf = LOG_FMT_TEXT;
	enum log_level ll = LOG_LVL_INFO;
	if ((a.log_format && log_format_parse(a.log_format, &lf) < 0) ||
	    (a.log_level && log_level_parse(a.log_level, &ll) < 0)) {
		fprintf(stderr,
		        "fps-controller: bad --log-format (text|json) or --log-level (debug|info|warn|error)\n");
		return EXIT_USAGE;
	}
	log_init("fps-controller", lf, ll);
	/* denied asks a running controller: no configuration needed */
	if (strcmp(cmd, "denied") == 0)
		return deniedcli_run(a.admin, a.json, stdout);
	if (strcmp(cmd, "purge") == 0)
		return purge_cli(a.admin, a.target, stdout);
	/* explain: exit 0 allowed, 1 denied, 2 usage, 3 runtime */
	if (strcmp(cmd, "explain") == 0)
		return explain_cli(a.admin ? NULL : a.config_dir, a.secrets_dir, a.admin, a.json, a.target, stdout);
	if (a.json && strcmp(cmd, "diagnose") != 0) {
		fprintf(stderr, "fps-controller %s: --json is for diagnose only\n", cmd);
		return EXIT_USAGE;
	}
	if (a.config_dir == NULL) {
		fprintf(stderr, "fps-controller %s: --config-dir is required\n", cmd);
		return EXIT_USAGE;
	}
	/* diagnose needs no templates or helpers: it only reads the config and probes. */
	if (strcmp(cmd, "diagnose") == 0)
		return diagnose_run(a.config_dir, a.secrets_dir, a.state_dir, a.json, stdout);
	struct ctl_paths paths;
	struct fps_err e;
	err_clear(&e);
	char buf[1600];
	if (ctl_find_paths(&paths, &e) < 0) {
		fprintf(stderr, "fps-controller: %s\n", err_str(&e, buf, sizeof(buf)));
		return EXIT_RUNTIME;
	}
	if (strcmp(cmd, "check") == 0)
		return cmd_check(&a, &paths);
	if (strcmp(cmd, "render") == 0) {
		if (a.out == NULL) {
			fprintf(stderr, "fps-controller render: --out is required\n");
			return EXIT_USAGE;
		}
		return cmd_render(&a, &paths);
	}
	if (strcmp(cmd, "run") == 0) {
		if (a.secrets_dir == NULL || a.state_dir == NULL) {
			fprintf(stderr, "fps-controller run: --secrets-dir and --state-dir are required\n");
			return EXIT_USAGE;
		}
		struct ctl_opts o = {.config_dir = a.config_dir,
		                     .secrets_dir = a.secrets_dir,
		                     .state_dir = a.state_dir,
		                     .admin = a.admin,
		                     .mode = CTL_MODE_SUPERVISE};
		if (a.mode && strcmp(a.mode, "sidecar") == 0) {
			o.mode = CTL_MODE_SIDECAR;
		} else if (a.mode && strcmp(a.mode, "supervise") != 0) {
			fprintf(stderr, "fps-controller run: --mode is supervise or sidecar\n");
			return EXIT_USAGE;
		}
		char state_abs[PATH_MAX];
		if (fsio_mkdirs(a.state_dir, 0750, &e) < 0 || realpath(a.state_dir, state_abs) == NULL) {
			fprintf(stderr, "fps-controller: cannot use --state-dir %s\n", a.state_dir);
			return EXIT_RUNTIME;
		}
		o.state_dir = state_abs;
		return ctl_run(&o, &paths);
	}
	fprintf(stderr, "fps-controller: unknown command '%s'\n", cmd);
	usage(stderr);
	return EXIT_USAGE;
}
