/*
 * fps-controller: command line (fps-controller --help). Maps every outcome to the fixed exit
 * codes: 0 ok, 1 invalid input, 2 usage, 3 runtime failure.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adminaddr.h"
#include "adminclient.h"
#include "config.h"
#include "controller.h"
#include "deniedcli.h"
#include "reportscli.h"
#include "explain.h"
#include "purge.h"
#include "diagnose.h"
#include "fsio.h"
#include "inputs.h"
#include "log.h"
#include "squid.h"
#include "state.h"
#include "tunnel.h"

#define EXIT_INVALID 1
#define EXIT_USAGE   2
#define EXIT_RUNTIME 3

static void usage(FILE *f)
{
	fprintf(f,
	        "usage:\n"
	        "  fps-controller run    --config-dir D --secrets-dir D --state-dir D [--mode supervise|sidecar]\n"
	        "                        [--admin ADDR:PORT] [--admin-spare ADDR:PORT]\n"
	        "                        [--log-format text|json] [--log-level LEVEL]\n"
	        "  fps-controller render --config-dir D [--secrets-dir D] --out D\n"
	        "  fps-controller check  --config-dir D [--secrets-dir D] [--state-dir D]\n"
	        "  fps-controller diagnose [--config-dir D --secrets-dir D --state-dir D | --admin ADDR:PORT]\n"
	        "                        [--json]\n"
	        "  fps-controller keys   (every configuration key, as docs/configuration.md lists them)\n"
	        "  fps-controller denied [--admin ADDR:PORT] [--json]\n"
	        "  fps-controller failures [--admin ADDR:PORT] [--json]\n"
	        "  fps-controller traffic [--admin ADDR:PORT] [--json]\n"
	        "  fps-controller explain [--config-dir D --secrets-dir D | --admin ADDR:PORT] [--json] HOST[:PORT]\n"
	        "  fps-controller explain [--admin ADDR:PORT] [--json] http://HOST[:PORT]/PATH\n"
	        "  fps-controller purge  [--admin ADDR:PORT] URL   (removes URL from the update cache)\n"
	        "  fps-controller get    [--state-dir D | --admin ADDR:PORT] PATH   (GET an admin endpoint:\n"
	        "                        exit 0 on 2xx, 1 on another status; the probes of the pod)\n"
	        "  fps-controller --version | version | --help | help\n"
	        "LEVEL is debug, info, warn or error. FPS_CONFIG_DIR, FPS_SECRETS_DIR, FPS_STATE_DIR may\n"
	        "stand in for the flags. Without them, diagnose asks the controller at --admin (default\n"
	        "" ADMINCLIENT_DEFAULT ") where its inputs are, and explain asks that controller.\n"
	        "The commands that ask a controller use, without --admin, the address the controller of\n"
	        "--state-dir (FPS_STATE_DIR) wrote to <state>/" ADMINADDR_FILE ", when there is one.\n"
	        "Exit codes: 0 ok, 1 invalid input, 2 usage, 3 runtime failure.\n");
}

struct args {
	const char *config_dir, *secrets_dir, *state_dir, *out, *admin, *admin_spare;
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
	    {"admin-spare", required_argument, NULL, 'A'},
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
		case 'A':
			a->admin_spare = optarg;
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
	if ((strcmp(argv[1], "explain") == 0 || strcmp(argv[1], "purge") == 0 || strcmp(argv[1], "get") == 0) &&
	    optind == argc - 1)
		a->target = argv[optind++];
	if (optind != argc) {
		fprintf(stderr, "fps-controller: unexpected argument '%s'\n", argv[optind]);
		return -1;
	}
	return 0;
}

/* Writes a rendered generation into out_dir as Squid reads it: the files, and the error
 * templates linked beside ours. Prints each file's path when list is set. */
static int write_generation(const char *out_dir, const struct render_out *out, bool list, struct fps_err *e)
{
	for (size_t i = 0; i < out->n_files; i++) {
		char path[PATH_MAX + 80], dir[PATH_MAX + 80];
		snprintf(path, sizeof(path), "%s/%s", out_dir, out->files[i].name);
		snprintf(dir, sizeof(dir), "%s", path);
		*strrchr(dir, '/') = '\0';
		if (fsio_mkdirs(dir, 0755, e) < 0 ||
		    fsio_write_atomic(path, out->files[i].data, out->files[i].len, 0640, (gid_t)-1, e) < 0)
			return -1;
		if (list)
			printf("%s\n", path);
	}
	char errors[PATH_MAX + 16];
	snprintf(errors, sizeof(errors), "%s/errors", out_dir);
	return state_link_error_templates(errors, e);
}

/* `check` judges what `run` judges, without side effects: the Secret as the reload pipeline
 * checks it (apikeys.json parses; the tunnel's CA, client certificate and key are PEM that
 * OpenSSL loads, both or neither, and matching), the generation built the same way (the update
 * cache's size against the memory limit and, with --state-dir, that volume), and
 * `squid -k parse` of it (in a temporary directory, removed afterwards). Without
 * --secrets-dir the Secret is not judged. */
static int check_generation(const struct args *a, const struct ctl_paths *paths, struct fps_config *c,
                            struct compiled *cp, struct fps_err *e)
{
	if (a->secrets_dir && inputs_check_secrets(a->secrets_dir, e) < 0)
		return EXIT_INVALID;
	char tmp[] = "/tmp/fps-check-XXXXXX";
	if (mkdtemp(tmp) == NULL) {
		err_set(e, "/tmp", 0, 0, "cannot create a directory to prove the generation in: %s", strerror(errno));
		return EXIT_RUNTIME;
	}
	struct render_out out;
	int rc = 0;
	struct ctl_build_room judge = {.state_dir = a->state_dir};
	if (ctl_build(a->config_dir, a->secrets_dir, paths, tmp, &judge, c, cp, &out, e) < 0) {
		fsio_rmtree(tmp);
		return EXIT_INVALID;
	}
	char conf[PATH_MAX];
	snprintf(conf, sizeof(conf), "%s/squid.conf", tmp);
	if (a->secrets_dir && c->has_tunnel && tunnel_check_secrets(a->secrets_dir, e) < 0)
		rc = EXIT_INVALID;
	else if (write_generation(tmp, &out, false, e) < 0)
		rc = EXIT_RUNTIME;
	else if (squid_parse_check(paths->squid_bin, conf, NULL, 0, e) < 0)
		rc = EXIT_INVALID;
	render_free(&out);
	fsio_rmtree(tmp);
	if (rc != 0) {
		compile_free(cp);
		cfg_free(c);
	}
	return rc;
}

static int cmd_check(const struct args *a, const struct ctl_paths *paths)
{
	struct fps_config c;
	struct compiled cp;
	struct fps_err e;
	err_clear(&e);
	char buf[1600];
	int rc = check_generation(a, paths, &c, &cp, &e);
	if (rc != 0) {
		fprintf(stderr, "%s\n", err_str(&e, buf, sizeof(buf)));
		return rc;
	}
	ctl_report_entries(&cp, a->config_dir);
	/* Valid, but Squid (running as its own user) could not read it where it is. */
	char why[512];
	if (state_check_squid_access(a->state_dir, NULL, c.hosts_file[0] ? c.hosts_file : NULL, why, sizeof(why)) < 0) {
		fprintf(stderr, "%s: %s\n", a->config_dir, why);
		compile_free(&cp);
		cfg_free(&c);
		return EXIT_INVALID;
	}
	printf("%s: valid: %zu entries (%zu direct, %zu upstream, %zu tunnel), %zu folded, %zu rejected\n",
	       a->config_dir, cp.policy.n_entries, cp.by_route[WL_VIA_DIRECT], cp.by_route[WL_VIA_UPSTREAM],
	       cp.by_route[WL_VIA_TUNNEL], cp.policy.n_folded, cp.n_rejected);
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
	if (ctl_build(a->config_dir, a->secrets_dir, paths, out_dir, NULL, &c, &cp, &out, &e) < 0) {
		fprintf(stderr, "%s\n", err_str(&e, buf, sizeof(buf)));
		return EXIT_INVALID;
	}
	ctl_report_entries(&cp, a->config_dir);
	int rc = 0;
	if (write_generation(out_dir, &out, true, &e) < 0) {
		rc = EXIT_RUNTIME;
		fprintf(stderr, "%s\n", err_str(&e, buf, sizeof(buf)));
	}
	render_free(&out);
	compile_free(&cp);
	cfg_free(&c);
	return rc;
}

/* Without --admin: the address the controller of the state directory wrote (adminaddr.h),
 * whose answers alone then count. Returns -1 with why when state_dir names none. */
static int own_admin(struct args *a, char *buf, size_t len, char *why, size_t wlen)
{
	if (a->admin != NULL)
		return 0;
	if (a->state_dir == NULL || a->state_dir[0] == '\0') {
		snprintf(why, wlen, "no --state-dir (or FPS_STATE_DIR) and no --admin");
		return -1;
	}
	char id[64];
	if (adminaddr_read(a->state_dir, buf, len, id, sizeof(id), why, wlen) < 0)
		return -1;
	a->admin = buf;
	adminclient_expect_instance(id);
	return 0;
}

/* `get PATH`: the body on stdout; 0 for a 2xx answer, 1 for another status, 3 when no
 * controller (or another instance's) answers. What an exec probe needs. */
static int cmd_get(const char *admin, const char *path)
{
	if (path == NULL || path[0] != '/' || strlen(path) > 1024 || strpbrk(path, " \t\r\n") != NULL) {
		fprintf(stderr, "fps-controller get: PATH is an absolute path such as /readyz\n");
		return EXIT_USAGE;
	}
	for (const char *p = path; *p; p++)
		if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e) {
			fprintf(stderr, "fps-controller get: PATH is an absolute path such as /readyz\n");
			return EXIT_USAGE;
		}
	char *body = NULL, err[600];
	int code = adminclient_get(admin, path, 10000, &body, err, sizeof(err));
	if (code < 0) {
		fprintf(stderr, "fps-controller get: %s\n", err);
		return EXIT_RUNTIME;
	}
	fputs(body, stdout);
	free(body);
	if (code < 200 || code > 299) {
		fprintf(stderr, "fps-controller get: http://%s%s answered %d\n", admin, path, code);
		return 1;
	}
	return 0;
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
	/* The commands that ask a running controller: its own address when the state
	 * directory names one (a pod during a rolling update has two on one node). */
	char own[160], own_why[600];
	if (strcmp(cmd, "get") == 0) {
		if (own_admin(&a, own, sizeof(own), own_why, sizeof(own_why)) < 0 && a.state_dir != NULL) {
			fprintf(stderr, "fps-controller get: %s\n", own_why);
			return EXIT_RUNTIME;
		}
		return cmd_get(a.admin ? a.admin : ADMINCLIENT_DEFAULT, a.target);
	}
	if (strcmp(cmd, "denied") == 0 || strcmp(cmd, "failures") == 0 || strcmp(cmd, "traffic") == 0 ||
	    strcmp(cmd, "purge") == 0 || (strcmp(cmd, "explain") == 0 && a.config_dir == NULL) ||
	    (strcmp(cmd, "diagnose") == 0 && a.config_dir == NULL))
		(void)own_admin(&a, own, sizeof(own), own_why, sizeof(own_why)); /* else the default address */
	/* denied asks a running controller: no configuration needed */
	if (strcmp(cmd, "denied") == 0)
		return deniedcli_run(a.admin, a.json, stdout);
	if (strcmp(cmd, "failures") == 0)
		return reportscli_failures(a.admin, a.json, stdout);
	if (strcmp(cmd, "traffic") == 0)
		return reportscli_traffic(a.admin, a.json, stdout);
	if (strcmp(cmd, "purge") == 0)
		return purge_cli(a.admin, a.target, stdout);
	/* explain: exit 0 allowed, 1 denied, 2 usage, 3 runtime */
	if (strcmp(cmd, "explain") == 0) {
		/* with neither flag nor FPS_CONFIG_DIR: the controller at the default admin address */
		const char *admin = a.admin == NULL && a.config_dir == NULL ? ADMINCLIENT_DEFAULT : a.admin;
		return explain_cli(admin ? NULL : a.config_dir, a.secrets_dir, admin, a.json, a.target, stdout);
	}
	/* diagnose with neither flag nor FPS_CONFIG_DIR: the inputs of the running controller */
	char dirs[3][1024];
	if (strcmp(cmd, "diagnose") == 0 && a.config_dir == NULL) {
		const char *admin = a.admin ? a.admin : ADMINCLIENT_DEFAULT;
		char why[600];
		if (adminclient_inputs(admin, dirs, why, sizeof(why)) < 0) {
			fprintf(
			    stderr,
			    "fps-controller diagnose: no --config-dir (or FPS_CONFIG_DIR), and the controller at %s "
			    "cannot say where its inputs are: %s\n",
			    admin, why);
			return EXIT_USAGE;
		}
		a.config_dir = dirs[0];
		a.secrets_dir = a.secrets_dir ? a.secrets_dir : (dirs[1][0] ? dirs[1] : NULL);
		a.state_dir = a.state_dir ? a.state_dir : (dirs[2][0] ? dirs[2] : NULL);
	}
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
		                     .admin_spare = a.admin_spare,
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
