/*
 * ctl_probe: the tunnel and upstream prober, in a thread of its own (a TLS handshake to a dead
 * or filtered server may take seconds, and the loop must not wait for it). It keeps what it
 * found in struct probe; the loop copies that into the status snapshot. health.c is its twin
 * for Squid's own answer.
 */
#include "ctl_internal.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "net.h"

#define PROBE_MS          10000 /* full tunnel check (TLS handshake, certificate) while it is up */
#define PROBE_FAST_MS     1000  /* TCP reachability while up; full check while down */
#define PROBE_UPSTREAM_MS 3000  /* the upstream proxy's TCP connect */

static void probe_upstream(const struct fps_config *c, struct status_path *st)
{
	memset(st, 0, sizeof(*st));
	st->configured = true;
	st->checked_unix = ctl_wall_now();
	snprintf(st->target, sizeof(st->target), "%s:%d", c->upstream_host, c->upstream_port);
	char portstr[16];
	snprintf(portstr, sizeof(portstr), "%d", c->upstream_port);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	int gai = getaddrinfo(c->upstream_host, portstr, &hints, &ai);
	if (gai != 0) {
		snprintf(st->error, sizeof(st->error), "cannot resolve %s: %s", c->upstream_host, gai_strerror(gai));
		return;
	}
	int fd, en;
	enum net_result nr = net_connect(ai->ai_addr, ai->ai_addrlen, sup_now_ms() + PROBE_UPSTREAM_MS, &fd, &en);
	if (nr == NET_OK)
		st->up = true;
	else
		snprintf(st->error, sizeof(st->error), "cannot connect to %s: %s", st->target,
		         nr == NET_TIMEOUT ? "timed out" : strerror(en));
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
}

/* Can a TCP connection to the tunnel server be opened within PROBE_FAST_MS? The cheap
 * check between full handshakes: a stopped or unreachable server shows within a second
 * instead of at the next full check. */
static bool probe_tunnel_reachable(const struct fps_config *c)
{
	char portstr[16];
	snprintf(portstr, sizeof(portstr), "%d", c->tunnel_port);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	if (getaddrinfo(c->tunnel_address[0] ? c->tunnel_address : c->tunnel_server, portstr, &hints, &ai) != 0)
		return false;
	int fd, en;
	bool ok = net_connect(ai->ai_addr, ai->ai_addrlen, sup_now_ms() + PROBE_FAST_MS, &fd, &en) == NET_OK;
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
	return ok;
}

/* The tunnel is checked every PROBE_FAST_MS: a full TLS check while it is down (so
 * recovery shows within about a second) and every PROBE_MS while it is up, with a TCP
 * connect in between (a failure triggers the full check at once). The upstream check
 * is a TCP connect, every PROBE_FAST_MS. */
static void *probe_main(void *arg)
{
	struct probe *p = arg;
	long long next_full = 0;
	pthread_mutex_lock(&p->mu);
	while (!p->quit) {
		struct fps_config cfg = p->cfg;
		bool kicked = p->kick, was_up = p->tunnel.up, was_up_upstream = p->upstream.up;
		bool clock_answered = p->clock.have;
		struct status_path t = p->tunnel, u = {0};
		p->kick = false;
		pthread_mutex_unlock(&p->mu);
		long long now = sup_now_ms();
		bool full = kicked || !was_up || now >= next_full;
		if (cfg.has_tunnel && !full && !probe_tunnel_reachable(&cfg))
			full = true;
		if (cfg.has_tunnel && full) {
			tunnel_probe(&cfg, &p->paths, 5000, &t);
			t.configured = true;
			t.checked_unix = ctl_wall_now();
			next_full = now + PROBE_MS;
		} else if (!cfg.has_tunnel) {
			memset(&t, 0, sizeof(t));
		}
		if (cfg.has_upstream)
			probe_upstream(&cfg, &u);
		/* The clock against a reference we trust: after each change, when a reference comes up
		 * (at start the tunnel is rarely up at the first check), then once a minute; while no
		 * reference has answered though one is up, every CLOCK_RETRY_S (the cloud proxy behind
		 * the tunnel may still be starting when the tunnel's TLS already answers). */
		static double clock_at;
		struct clock_check ck;
		bool have_ref = (cfg.has_tunnel && t.up) || (cfg.has_upstream && u.up);
		bool clock_due = kicked || (cfg.has_tunnel && t.up && !was_up) ||
		                 (cfg.has_upstream && u.up && !was_up_upstream) ||
		                 ctl_wall_now() - clock_at >= CLOCK_PERIOD_S ||
		                 (have_ref && !clock_answered && ctl_wall_now() - clock_at >= CLOCK_RETRY_S);
		if (clock_due) {
			clock_check(&cfg, &ck);
			clock_at = ctl_wall_now();
			if (ck.have && !ck.ok)
				log_warn(
				    "clock: the system clock is %.0f s %s %s (Date: %s): API keys and certificates are "
				    "judged by this clock",
				    fabs(ck.skew_seconds), ck.skew_seconds > 0 ? "ahead of" : "behind", ck.reference,
				    ck.ref_date);
		}
		pthread_mutex_lock(&p->mu);
		if (clock_due)
			p->clock = ck;
		p->tunnel = t;
		p->upstream = u;
		if (cfg.has_tunnel && t.up && !was_up)
			log_info("tunnel to %s is up", t.target);
		if ((t.up != was_up || u.up != was_up_upstream) && p->notify_fd >= 0) {
			uint64_t one = 1;
			if (write(p->notify_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
				log_warn_errno("probe: cannot wake the control loop");
		}
		if (p->quit)
			break;
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += PROBE_FAST_MS / 1000;
		while (!p->quit && !p->kick)
			if (pthread_cond_timedwait(&p->cv, &p->mu, &until) != 0)
				break;
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* Gives the prober the scalar fields it reads (never the pointers the loop frees). */
void probe_update(struct probe *p, const struct fps_config *c)
{
	struct fps_config copy;
	memset(&copy, 0, sizeof(copy));
	memcpy(copy.config_dir, c->config_dir, sizeof(copy.config_dir));
	memcpy(copy.secrets_dir, c->secrets_dir, sizeof(copy.secrets_dir));
	copy.has_tunnel = c->has_tunnel;
	memcpy(copy.tunnel_server, c->tunnel_server, sizeof(copy.tunnel_server));
	memcpy(copy.tunnel_address, c->tunnel_address, sizeof(copy.tunnel_address));
	copy.tunnel_port = c->tunnel_port;
	copy.tunnel_local_port = c->tunnel_local_port;
	copy.has_upstream = c->has_upstream;
	memcpy(copy.upstream_host, c->upstream_host, sizeof(copy.upstream_host));
	copy.upstream_port = c->upstream_port;
	pthread_mutex_lock(&p->mu);
	p->cfg = copy;
	p->kick = true;
	bool start = !p->started && (c->has_tunnel || c->has_upstream);
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
	if (start && pthread_create(&p->thread, NULL, probe_main, p) == 0)
		p->started = true;
}

void probe_stop(struct probe *p)
{
	pthread_mutex_lock(&p->mu);
	p->quit = true;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
	if (p->started)
		pthread_join(p->thread, NULL);
}
