/*
 * mnedc_tun: a minimal Linux TUN addon (plain Node-API, version 8).
 *
 * Why native at all: per-packet fs reads would cost one threadpool round trip
 * and one JS crossing per packet. Instead the fd is watched with uv_poll on the
 * main loop; each wake-up drains up to RX_BATCH_MAX packets with read() and
 * hands them to JS as ONE Buffer of [u32be length][packet] records through ONE
 * napi_make_callback. Writes are batched the same way (one crossing per batch).
 *
 * Offloads: opened with IFF_VNET_HDR, every packet read or written is preceded by a 10-byte
 * struct virtio_net_hdr, and TUNSETOFFLOAD lets the kernel hand over (and take) up to 64 KB TCP/UDP
 * super-packets with the checksum left to whoever delivers them. That divides the per-packet costs
 * (syscalls, JS work, TLS records, the kernel's own receive path) by up to ~45 at a 1400-byte MTU.
 * The header is kept in virtio 1.0 (little-endian) byte order on both sides of this addon, whatever
 * the host's, so JS and the wire never see native endianness.
 *
 * Lifetime: the JS object owns a tun_t via napi_wrap. The uv_poll_t lives
 * inside tun_t, so tun_t may only be freed once libuv is done with the handle
 * (after the uv_close callback) AND the JS object is gone (finalizer ran).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
/* After <netinet/in.h>, so libc-compat keeps it from redefining struct in6_addr. */
#include <linux/ipv6.h>
#include <net/route.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <node_api.h>
#include <uv.h>

#define RX_BATCH_MAX 256
#define RX_HDR 4
#define RX_PKT_MAX 65536
#define VNET_HDR 10
/* 1 MiB: 256 MTU-1500 packets always fit, so the count limit is what normally ends a drain. */
#define RX_SCRATCH (1u << 20)

typedef struct {
  napi_env env;
  int fd;
  char name[IFNAMSIZ];
  uv_poll_t poll;
  bool poll_inited;  /* uv_poll_init done: handle must be uv_close'd before freeing */
  bool poll_closing; /* uv_close issued */
  bool polling;      /* uv_poll_start active */
  bool started, paused, closed, finalized, in_callback;
  /* Registered for as long as the poll handle exists; see on_poll_closed. */
  napi_async_cleanup_hook_handle teardown_hook;
  napi_ref self_ref; /* strong while started: an active reader must not be GC'd */
  napi_ref cb_ref;
  napi_async_context actx;
  uint8_t *scratch;
  size_t vnet; /* VNET_HDR with IFF_VNET_HDR, else 0 */
  uint64_t rx_packets, rx_bytes, tx_packets, tx_bytes, tx_drops, rx_errors, rx_batches;
} tun_t;

/* Distinguishes our wrapped objects from other addons' (napi_unwrap alone would accept them). */
static const napi_type_tag TUN_TAG = {0x6d6e65646374756eULL, 0x9e3779b97f4a7c15ULL};

/* ---------- errors ---------- */

/* Message "<what> <name>: <strerror>", e.g. "TUNSETIFF mnedc0: Operation not permitted". */
static void throw_sys(napi_env env, const char *syscall, const char *what, const char *name, int err) {
  char msg[256], code[64];
  napi_value vmsg, vcode = NULL, verr, vnum, vsys;
  snprintf(msg, sizeof msg, "%s %s: %s", what, name, strerror(err));
  uv_err_name_r(uv_translate_sys_error(err), code, sizeof code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &vmsg);
  if (strncmp(code, "Unknown", 7) != 0) napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &vcode);
  napi_create_error(env, vcode, vmsg, &verr);
  /* Same shape as Node's own system errors (negative errno, syscall). */
  napi_create_int32(env, -err, &vnum);
  napi_set_named_property(env, verr, "errno", vnum);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &vsys);
  napi_set_named_property(env, verr, "syscall", vsys);
  napi_throw(env, verr);
}

static void throw_errno(napi_env env, const char *op, const char *name, int err) {
  throw_sys(env, op, op, name, err);
}

static void throw_closed(napi_env env, const char *op, const tun_t *t) {
  char msg[128];
  snprintf(msg, sizeof msg, "%s %s: tun device is closed", op, t->name);
  napi_throw_error(env, "ERR_TUN_CLOSED", msg);
}

/* ---------- teardown ---------- */

static void tun_free(tun_t *t) {
  free(t->scratch);
  free(t);
}

static void on_poll_closed(uv_handle_t *h) {
  tun_t *t = h->data;
  /* Only now is the fd out of libuv's hands; closing earlier could let a
   * recycled fd number be polled by this handle. */
  if (t->fd >= 0) close(t->fd);
  t->fd = -1;
  t->poll_inited = false;
  /* A Worker's teardown waits for this before dlclose()ing the addon. Without
   * it, libuv would run this very callback after the code was unmapped. */
  if (t->teardown_hook) {
    napi_remove_async_cleanup_hook(t->teardown_hook);
    t->teardown_hook = NULL;
  }
  if (t->finalized) tun_free(t);
}

/* Stops polling and releases the fd. Touches no JS, so it is safe from a
 * finalizer or a cleanup hook. */
static void release_os(tun_t *t) {
  if (t->poll_inited) {
    if (!t->poll_closing) {
      t->poll_closing = true;
      uv_poll_stop(&t->poll);
      t->polling = false;
      uv_close((uv_handle_t *)&t->poll, on_poll_closed);
    }
  } else if (t->fd >= 0) {
    close(t->fd);
    t->fd = -1;
  }
}

/* Env teardown (a Worker exiting, or the main loop running dry) with the poll
 * handle still alive. Asynchronous because completion is the uv_close callback. */
static void teardown_hook(napi_async_cleanup_hook_handle handle, void *arg) {
  tun_t *t = arg;
  t->closed = true;
  release_os(t); /* no-op if close() already issued uv_close */
}

/* Drops JS-side resources; must not run while napi_make_callback is using actx. */
static void release_js(tun_t *t) {
  napi_env env = t->env;
  if (t->cb_ref) { napi_delete_reference(env, t->cb_ref); t->cb_ref = NULL; }
  if (t->actx) { napi_async_destroy(env, t->actx); t->actx = NULL; }
  if (t->self_ref) { napi_delete_reference(env, t->self_ref); t->self_ref = NULL; }
}

static void tun_finalize(napi_env env, void *data, void *hint) {
  tun_t *t = data;
  t->finalized = true;
  t->closed = true;
  /* While started, self_ref is strong, so reaching here with JS state left
   * means env teardown: drop references but leak actx (async hooks may already be gone). */
  if (t->cb_ref) { napi_delete_reference(env, t->cb_ref); t->cb_ref = NULL; }
  if (t->self_ref) { napi_delete_reference(env, t->self_ref); t->self_ref = NULL; }
  release_os(t);
  if (!t->poll_inited) tun_free(t); /* else on_poll_closed frees it */
}

/* ---------- read path ---------- */

/* The kernel's virtio_net_hdr is in native order (legacy virtio) unless told otherwise; the u16
 * fields after flags and gso_type are swapped to little-endian here (a no-op on little-endian hosts).
 * Symmetric, so it also turns a little-endian header back into native order before a write. */
static void vnet_to_le(uint8_t *h) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  for (int i = 2; i < VNET_HDR; i += 2) { uint8_t b = h[i]; h[i] = h[i + 1]; h[i + 1] = b; }
#else
  (void)h;
#endif
}

static void deliver(tun_t *t, size_t len, uint32_t count) {
  napi_env env = t->env;
  napi_handle_scope scope;
  napi_value argv[2], cb, recv;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  /* A copy, not an external buffer: JS may keep the batch while the scratch is reused. */
  if (napi_create_buffer_copy(env, len, t->scratch, NULL, &argv[0]) == napi_ok &&
      napi_create_uint32(env, count, &argv[1]) == napi_ok &&
      napi_get_reference_value(env, t->cb_ref, &cb) == napi_ok &&
      napi_get_reference_value(env, t->self_ref, &recv) == napi_ok) {
    t->in_callback = true;
    /* make_callback (not call_function) so nextTicks/microtasks run afterwards
     * and async_hooks see a proper async boundary. */
    napi_status s = napi_make_callback(env, t->actx, recv, cb, 2, argv, NULL);
    t->in_callback = false;
    if (s != napi_ok) {
      bool pending = false;
      napi_is_exception_pending(env, &pending);
      if (pending) {
        /* N-API swallows the throw into last_exception; re-raise it as Node
         * would for any I/O callback, and clear it or every later call fails. */
        napi_value exc;
        napi_get_and_clear_last_exception(env, &exc);
        napi_fatal_exception(env, exc);
      }
    }
  }
  napi_close_handle_scope(env, scope);
  if (t->closed) release_js(t); /* close() was called from inside the callback */
}

static void on_poll(uv_poll_t *h, int status, int events) {
  tun_t *t = h->data;
  if (t->closed) return;
  if (status < 0) {
    /* libuv already stopped the watcher (POLLERR, e.g. device gone). */
    t->rx_errors++;
    t->polling = false;
    return;
  }
  if (!(events & UV_READABLE)) return;

  size_t off = 0;
  uint32_t count = 0;
  /* Each read() gets room for a maximum-size packet: a shorter buffer would truncate it. */
  while (count < RX_BATCH_MAX && RX_SCRATCH - off >= RX_PKT_MAX + VNET_HDR + RX_HDR) {
    ssize_t n = read(t->fd, t->scratch + off + RX_HDR, RX_SCRATCH - off - RX_HDR);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) t->rx_errors++;
      break;
    }
    if (n == 0) break;
    if ((size_t)n <= t->vnet) { t->rx_errors++; continue; } /* cannot happen: the kernel always sends the header */
    uint8_t *hdr = t->scratch + off;
    if (t->vnet) vnet_to_le(hdr + RX_HDR);
    hdr[0] = (uint8_t)(n >> 24); hdr[1] = (uint8_t)(n >> 16);
    hdr[2] = (uint8_t)(n >> 8);  hdr[3] = (uint8_t)n;
    off += RX_HDR + (size_t)n;
    t->rx_bytes += (uint64_t)n - t->vnet;
    count++;
  }
  if (count == 0) return;
  t->rx_packets += count;
  t->rx_batches++;
  /* If the count limit ended the drain, level-triggered epoll wakes us again next turn. */
  deliver(t, off, count);
}

/* Reconciles uv_poll with started/paused/closed. */
static int update_poll(tun_t *t) {
  bool want = t->started && !t->paused && !t->closed;
  if (want == t->polling) return 0;
  int r = want ? uv_poll_start(&t->poll, UV_READABLE, on_poll) : uv_poll_stop(&t->poll);
  if (r == 0) t->polling = want;
  return r;
}

/* ---------- method plumbing ---------- */

/* Fetches this + args; on failure an exception is pending and NULL is returned. */
static tun_t *unwrap(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv,
                     const char *op, bool allow_closed) {
  napi_value self;
  void *data = NULL;
  bool ok = false;
  if (napi_get_cb_info(env, info, argc, argv, &self, NULL) != napi_ok) return NULL;
  if (napi_check_object_type_tag(env, self, &TUN_TAG, &ok) != napi_ok || !ok ||
      napi_unwrap(env, self, &data) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_THIS", "Illegal invocation: not a TunHandle");
    return NULL;
  }
  tun_t *t = data;
  if (t->closed && !allow_closed) { throw_closed(env, op, t); return NULL; }
  return t;
}

static napi_value undef(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

/* new TunHandle(name, vnetHdr): '' lets the kernel pick; '%d' patterns are expanded by the kernel. */
static napi_value m_new(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], self;
  bool vnet = false;
  char name[IFNAMSIZ + 1] = "";
  size_t len = 0;
  napi_get_cb_info(env, info, &argc, argv, &self, NULL);
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], NULL, 0, &len) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "TunHandle: name must be a string");
    return NULL;
  }
  if (len >= IFNAMSIZ) {
    throw_errno(env, "TUNSETIFF", "(name longer than 15 bytes)", EINVAL);
    return NULL;
  }
  napi_get_value_string_utf8(env, argv[0], name, sizeof name, &len);
  if (argc >= 2) napi_get_value_bool(env, argv[1], &vnet);
  const char *shown = len ? name : "(kernel-chosen)";

  /* O_CLOEXEC at open(): no window where a concurrent fork inherits it. */
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) { throw_sys(env, "open", "open /dev/net/tun for", shown, errno); return NULL; }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0);
  memcpy(ifr.ifr_name, name, len);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int e = errno;
    close(fd);
    throw_errno(env, "TUNSETIFF", shown, e);
    return NULL;
  }
  int hdr_sz = VNET_HDR;
  /* The default already, but stated: a 12-byte (mergeable-buffers) header would shift every packet. */
  if (vnet && ioctl(fd, TUNSETVNETHDRSZ, &hdr_sz) < 0) {
    int e = errno;
    close(fd);
    throw_errno(env, "TUNSETVNETHDRSZ", shown, e);
    return NULL;
  }

  tun_t *t = calloc(1, sizeof *t);
  if (!t) { close(fd); napi_throw_error(env, "ENOMEM", "TunHandle: out of memory"); return NULL; }
  t->env = env;
  t->fd = fd;
  t->vnet = vnet ? VNET_HDR : 0;
  memcpy(t->name, ifr.ifr_name, IFNAMSIZ - 1);
  if (napi_wrap(env, self, t, tun_finalize, NULL, NULL) != napi_ok) {
    close(fd);
    free(t);
    return NULL;
  }
  napi_type_tag_object(env, self, &TUN_TAG);
  return self;
}

static napi_value m_name(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  tun_t *t = unwrap(env, info, &argc, NULL, "name", true);
  if (!t) return NULL;
  napi_value v;
  napi_create_string_utf8(env, t->name, NAPI_AUTO_LENGTH, &v);
  return v;
}

/* ---------- configuration (ioctls on a throwaway socket) ---------- */

/* The socket's family picks the protocol whose ioctl handler runs (SIOCSIFADDR means IPv4 or IPv6 by it).
 * Returns 0, or the ioctl's errno without throwing, since some callers take an errno (EEXIST) as success;
 * -1 with an exception pending when the socket itself fails (EAFNOSUPPORT: a kernel without IPv6). */
static int cfg_ioctl(napi_env env, const tun_t *t, int family, unsigned long req, void *arg) {
  int s = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    throw_sys(env, "socket", family == AF_INET6 ? "socket(AF_INET6) for" : "socket(AF_INET) for", t->name, errno);
    return -1;
  }
  int r = ioctl(s, req, arg), e = errno;
  close(s);
  return r < 0 ? e : 0;
}

static bool ifioctl(napi_env env, tun_t *t, unsigned long req, const char *op, struct ifreq *ifr) {
  memcpy(ifr->ifr_name, t->name, IFNAMSIZ);
  int e = cfg_ioctl(env, t, AF_INET, req, ifr);
  if (e > 0) throw_errno(env, op, t->name, e);
  return e == 0;
}

static uint32_t mask_of(uint32_t prefix) {
  return htonl(prefix == 0 ? 0 : 0xffffffffu << (32 - prefix));
}

static void set_sin(struct sockaddr *sa, uint32_t be_addr) {
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = be_addr;
  memcpy(sa, &sin, sizeof sin);
}

static napi_value m_set_mtu(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  tun_t *t = unwrap(env, info, &argc, argv, "SIOCSIFMTU", false);
  if (!t) return NULL;
  int32_t mtu;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &mtu) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "setMtu: mtu must be a number");
    return NULL;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_mtu = mtu;
  ifioctl(env, t, SIOCSIFMTU, "SIOCSIFMTU", &ifr);
  return undef(env);
}

/* The (address: string, prefix: number) arguments of setAddress, addAddress6 and addRoute: `text` gets
 * the address as given, `out` (struct in_addr or in6_addr) its `family` form. Throws, naming `method` and
 * `what` ("address", "destination"), and returns false unless they are an address of that family and a
 * prefix up to its length. */
static bool address_args(napi_env env, const tun_t *t, napi_value *argv, size_t argc, const char *method, const char *what,
                         int family, void *out, uint32_t *prefix, char *text, size_t text_size) {
  size_t len;
  char msg[160];
  if (argc < 2 || napi_get_value_string_utf8(env, argv[0], text, text_size, &len) != napi_ok ||
      napi_get_value_uint32(env, argv[1], prefix) != napi_ok) {
    snprintf(msg, sizeof msg, "%s: expected (%s: string, prefix: number)", method, what);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return false;
  }
  if (inet_pton(family, text, out) != 1 || *prefix > (family == AF_INET6 ? 128u : 32u)) {
    snprintf(msg, sizeof msg, "%s %s: invalid IPv%d %s/prefix \"%s/%u\"", method, t->name, family == AF_INET6 ? 6 : 4, what, text, *prefix);
    napi_throw_range_error(env, "ERR_INVALID_ARG_VALUE", msg);
    return false;
  }
  return true;
}

/* setAddress(addr, prefix). SIOCSIFADDR replaces the primary address (and
 * resets a classful mask), so the netmask must be set after it. */
static napi_value m_set_address(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  tun_t *t = unwrap(env, info, &argc, argv, "SIOCSIFADDR", false);
  if (!t) return NULL;
  char addr[64];
  uint32_t prefix;
  struct in_addr ia;
  if (!address_args(env, t, argv, argc, "setAddress", "address", AF_INET, &ia, &prefix, addr, sizeof addr)) return NULL;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  set_sin(&ifr.ifr_addr, ia.s_addr);
  if (!ifioctl(env, t, SIOCSIFADDR, "SIOCSIFADDR", &ifr)) return NULL;
  uint32_t mask = mask_of(prefix);
  memset(&ifr, 0, sizeof ifr);
  set_sin(&ifr.ifr_netmask, mask);
  if (!ifioctl(env, t, SIOCSIFNETMASK, "SIOCSIFNETMASK", &ifr)) return NULL;
  /* Set every time, to none (0) for /31 and /32: SIOCSIFNETMASK moves the broadcast along with the mask
   * only on IFF_BROADCAST devices, which a TUN is not, so one from an earlier, shorter prefix would stay
   * (with its local-table route). Each of the three ioctls leaves an unchanged value alone, so applying
   * the same address again flushes no routes. */
  memset(&ifr, 0, sizeof ifr);
  set_sin(&ifr.ifr_broadaddr, prefix <= 30 ? (ia.s_addr | ~mask) : 0);
  ifioctl(env, t, SIOCSIFBRDADDR, "SIOCSIFBRDADDR", &ifr);
  return undef(env);
}

/* addAddress6(addr, prefix). IPv6 has no primary address to replace: this adds one, with the prefix
 * route, and one already there (EEXIST, whatever its prefix) counts as added, so applying a config
 * again disturbs nothing. Fails with EACCES while the interface's disable_ipv6 is set. No DAD delay: the
 * kernel skips DAD on IFF_NOARP devices, so the address is usable at once. */
static napi_value m_add_address6(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  tun_t *t = unwrap(env, info, &argc, argv, "SIOCSIFADDR", false);
  if (!t) return NULL;
  char addr[64];
  uint32_t prefix;
  struct in6_addr a6;
  if (!address_args(env, t, argv, argc, "addAddress6", "address", AF_INET6, &a6, &prefix, addr, sizeof addr)) return NULL;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (!ifioctl(env, t, SIOCGIFINDEX, "SIOCGIFINDEX", &ifr)) return NULL;
  struct in6_ifreq r6;
  memset(&r6, 0, sizeof r6);
  r6.ifr6_addr = a6;
  r6.ifr6_prefixlen = prefix;
  r6.ifr6_ifindex = ifr.ifr_ifindex;
  int e = cfg_ioctl(env, t, AF_INET6, SIOCSIFADDR, &r6);
  if (e < 0) return NULL;
  if (e > 0 && e != EEXIST) {
    char what[96];
    snprintf(what, sizeof what, "SIOCSIFADDR %s/%u on", addr, prefix);
    throw_sys(env, "SIOCSIFADDR", what, t->name, e);
    return NULL;
  }
  return undef(env);
}

/* addRoute(dst, prefix): what `ip route add dst/prefix dev <tun>` makes (main table, scope link, no
 * gateway, metric 0), e.g. to send a multicast group out of the TUN. An identical route already there
 * (EEXIST) counts as added. The kernel wants the device up (ENETDOWN) and drops the route again when it
 * goes down or its only IPv4 address is re-inserted (a new address or prefix), so add routes last. */
static napi_value m_add_route(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  tun_t *t = unwrap(env, info, &argc, argv, "SIOCADDRT", false);
  if (!t) return NULL;
  char dst[64];
  uint32_t prefix;
  struct in_addr ia;
  if (!address_args(env, t, argv, argc, "addRoute", "destination", AF_INET, &ia, &prefix, dst, sizeof dst)) return NULL;
  /* The kernel refuses host bits with a bare EINVAL; say so instead. */
  if (ia.s_addr & ~mask_of(prefix)) {
    char msg[160];
    snprintf(msg, sizeof msg, "addRoute %s: invalid IPv4 destination \"%s/%u\" (host bits set)", t->name, dst, prefix);
    napi_throw_range_error(env, "ERR_INVALID_ARG_VALUE", msg);
    return NULL;
  }
  struct rtentry rt;
  memset(&rt, 0, sizeof rt);
  set_sin(&rt.rt_dst, ia.s_addr);
  set_sin(&rt.rt_genmask, mask_of(prefix));
  rt.rt_flags = RTF_UP;
  rt.rt_dev = t->name;
  int e = cfg_ioctl(env, t, AF_INET, SIOCADDRT, &rt);
  if (e < 0) return NULL;
  if (e > 0 && e != EEXIST) {
    char what[96];
    snprintf(what, sizeof what, "SIOCADDRT %s/%u dev", dst, prefix);
    throw_sys(env, "SIOCADDRT", what, t->name, e);
    return NULL;
  }
  return undef(env);
}

static napi_value m_set_up(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  tun_t *t = unwrap(env, info, &argc, argv, "SIOCSIFFLAGS", false);
  if (!t) return NULL;
  bool up = true;
  if (argc >= 1) napi_get_value_bool(env, argv[0], &up);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (!ifioctl(env, t, SIOCGIFFLAGS, "SIOCGIFFLAGS", &ifr)) return NULL;
  if (up) ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  else ifr.ifr_flags &= ~IFF_UP;
  ifioctl(env, t, SIOCSIFFLAGS, "SIOCSIFFLAGS", &ifr);
  return undef(env);
}

/* ---------- polling control ---------- */

static napi_value m_start(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], self, name;
  tun_t *t = unwrap(env, info, &argc, argv, "start", false);
  if (!t) return NULL;
  napi_valuetype vt = napi_undefined;
  if (argc >= 1) napi_typeof(env, argv[0], &vt);
  if (vt != napi_function) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "start: onBatch must be a function");
    return NULL;
  }
  if (t->started) {
    char msg[96];
    snprintf(msg, sizeof msg, "start %s: already started (call close() and reopen to change the handler)", t->name);
    napi_throw_error(env, "ERR_TUN_STARTED", msg);
    return NULL;
  }
  napi_get_cb_info(env, info, NULL, NULL, &self, NULL);
  if (!t->scratch && !(t->scratch = malloc(RX_SCRATCH))) {
    napi_throw_error(env, "ENOMEM", "start: out of memory");
    return NULL;
  }
  if (!t->poll_inited) {
    uv_loop_t *loop;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok ||
        napi_add_async_cleanup_hook(env, teardown_hook, t, &t->teardown_hook) != napi_ok)
      return NULL;
    int r = uv_poll_init(loop, &t->poll, t->fd);
    if (r < 0) {
      napi_remove_async_cleanup_hook(t->teardown_hook);
      t->teardown_hook = NULL;
      throw_errno(env, "uv_poll_init", t->name, -r);
      return NULL;
    }
    t->poll.data = t;
    t->poll_inited = true;
  }
  napi_create_string_utf8(env, "mnedc:TunRead", NAPI_AUTO_LENGTH, &name);
  if (napi_async_init(env, self, name, &t->actx) != napi_ok ||
      napi_create_reference(env, argv[0], 1, &t->cb_ref) != napi_ok ||
      napi_create_reference(env, self, 1, &t->self_ref) != napi_ok) {
    release_js(t);
    return NULL;
  }
  t->started = true;
  int r = update_poll(t);
  if (r < 0) { throw_errno(env, "uv_poll_start", t->name, -r); return NULL; }
  return undef(env);
}

static napi_value set_paused(napi_env env, napi_callback_info info, bool paused, const char *op) {
  size_t argc = 0;
  tun_t *t = unwrap(env, info, &argc, NULL, op, false);
  if (!t) return NULL;
  t->paused = paused; /* also honoured by a later start() */
  if (t->started) {
    int r = update_poll(t);
    if (r < 0) { throw_errno(env, op, t->name, -r); return NULL; }
  }
  return undef(env);
}
static napi_value m_pause(napi_env env, napi_callback_info info) { return set_paused(env, info, true, "pause"); }
static napi_value m_resume(napi_env env, napi_callback_info info) { return set_paused(env, info, false, "resume"); }

/* ---------- write path ---------- */

/* Node 18's napi_get_buffer_info CHECK-aborts on a non-buffer instead of
 * returning napi_invalid_arg, so always ask napi_is_buffer first. */
static bool buffer_data(napi_env env, napi_value v, void **p, size_t *n) {
  bool is_buf = false;
  return napi_is_buffer(env, v, &is_buf) == napi_ok && is_buf &&
         napi_get_buffer_info(env, v, p, n) == napi_ok;
}

static const uint8_t ZERO_VNET[VNET_HDR];

/* Returns 1 written, 0 dropped, -1 fd unusable (errno set). Drops are normal for IP.
 * On a vnet device a packet without its own header gets an all-zero one (no offload) by writev,
 * so plain packets need no copy; one with a header has it converted to native order in place. */
static int write_one(tun_t *t, void *p, size_t n, bool has_vnet) {
  struct iovec iov[2];
  int iovcnt = 0;
  if (t->vnet && !has_vnet) {
    iov[iovcnt].iov_base = (void *)ZERO_VNET;
    iov[iovcnt++].iov_len = VNET_HDR;
  } else if (has_vnet) {
    if (n < VNET_HDR) { t->tx_drops++; return 0; }
    vnet_to_le(p);
  }
  iov[iovcnt].iov_base = p;
  iov[iovcnt++].iov_len = n;
  for (;;) {
    ssize_t w = iovcnt == 1 ? write(t->fd, p, n) : writev(t->fd, iov, iovcnt);
    if (has_vnet) vnet_to_le(p); /* the caller's buffer is left as it was given */
    if (w >= 0) {
      t->tx_packets++;
      t->tx_bytes += n - (has_vnet ? VNET_HDR : 0);
      return 1;
    }
    if (errno == EINTR) continue;
    if (errno == EBADF || errno == EBADFD) return -1;
    t->tx_drops++; /* EAGAIN, ENOBUFS, EIO (device down), EINVAL (malformed) ... */
    return 0;
  }
}

typedef struct { void *p; size_t n; } pkt_t;

/* writeBatch(packets, count, kinds?): kinds[i] = 1 when packets[i] starts with a virtio_net_hdr
 * (little-endian), 0 for a bare IP packet. Without kinds every packet is bare. */
static napi_value m_write_batch(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], ret;
  tun_t *t = unwrap(env, info, &argc, argv, "writeBatch", false);
  if (!t) return NULL;
  bool is_arr = false;
  uint32_t len = 0, count;
  if (argc >= 1) napi_is_array(env, argv[0], &is_arr);
  if (!is_arr) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "writeBatch: packets must be an array of Buffers");
    return NULL;
  }
  napi_get_array_length(env, argv[0], &len);
  count = len;
  napi_valuetype vt = napi_undefined;
  if (argc >= 2) napi_typeof(env, argv[1], &vt);
  if (vt != napi_undefined && napi_get_value_uint32(env, argv[1], &count) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "writeBatch: count must be a number");
    return NULL;
  }
  if (count > len) count = len;
  const uint8_t *kinds = NULL;
  size_t kinds_len = 0;
  vt = napi_undefined;
  if (argc >= 3) napi_typeof(env, argv[2], &vt);
  if (vt != napi_undefined) {
    bool is_ta = false;
    napi_typedarray_type tt;
    void *kp = NULL;
    if (napi_is_typedarray(env, argv[2], &is_ta) != napi_ok || !is_ta ||
        napi_get_typedarray_info(env, argv[2], &tt, &kinds_len, &kp, NULL, NULL) != napi_ok ||
        tt != napi_uint8_array || kinds_len < count) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "writeBatch: kinds must be a Uint8Array with an entry per packet");
      return NULL;
    }
    kinds = kp;
    if (!t->vnet) {
      for (uint32_t i = 0; i < count; i++) {
        if (kinds[i]) {
          napi_throw_error(env, "ERR_TUN_NO_VNET", "writeBatch: a packet with a virtio_net_hdr for a device opened without offloads");
          return NULL;
        }
      }
    }
  }

  /* Validate everything before writing anything, so a bad element never leaves
   * a half-written batch. Buffer memory stays put: the array keeps it alive. */
  pkt_t stack_pkts[64];
  pkt_t *pkts = count <= 64 ? stack_pkts : malloc(sizeof(pkt_t) * count);
  if (!pkts) { napi_throw_error(env, "ENOMEM", "writeBatch: out of memory"); return NULL; }
  napi_value el = NULL;
  for (uint32_t i = 0; i < count; i++) {
    void *p;
    size_t n;
    if (napi_get_element(env, argv[0], i, &el) != napi_ok || !buffer_data(env, el, &p, &n)) {
      char msg[96];
      snprintf(msg, sizeof msg, "writeBatch: packets[%u] is not a Buffer", i);
      if (pkts != stack_pkts) free(pkts);
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
      return NULL;
    }
    pkts[i].p = p;
    pkts[i].n = n;
  }
  uint32_t written = 0;
  int bad = 0;
  for (uint32_t i = 0; i < count; i++) {
    int r = write_one(t, pkts[i].p, pkts[i].n, kinds && kinds[i]);
    if (r < 0) { bad = errno; break; }
    written += (uint32_t)r;
  }
  if (pkts != stack_pkts) free(pkts);
  if (bad) { throw_errno(env, "write", t->name, bad); return NULL; }
  napi_create_uint32(env, written, &ret);
  return ret;
}

static napi_value m_write_packet(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], ret;
  tun_t *t = unwrap(env, info, &argc, argv, "writePacket", false);
  if (!t) return NULL;
  void *p;
  size_t n;
  if (argc < 1 || !buffer_data(env, argv[0], &p, &n)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "writePacket: packet must be a Buffer");
    return NULL;
  }
  int r = write_one(t, p, n, false);
  if (r < 0) { throw_errno(env, "write", t->name, errno); return NULL; }
  napi_get_boolean(env, r == 1, &ret);
  return ret;
}

/* ---------- offloads ---------- */

/* setOffload(flags): TUNSETOFFLOAD with TUN_F_* bits; the kernel refuses (EINVAL) bits it does not
 * know, so callers probe by trying. Changing them live is fine: the stack re-reads the features. */
static napi_value m_set_offload(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  tun_t *t = unwrap(env, info, &argc, argv, "TUNSETOFFLOAD", false);
  if (!t) return NULL;
  uint32_t flags;
  if (argc < 1 || napi_get_value_uint32(env, argv[0], &flags) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "setOffload: flags must be a number");
    return NULL;
  }
  if (!t->vnet && flags) {
    throw_errno(env, "TUNSETOFFLOAD", t->name, EINVAL);
    return NULL;
  }
  if (ioctl(t->fd, TUNSETOFFLOAD, (unsigned long)flags) < 0) { throw_errno(env, "TUNSETOFFLOAD", t->name, errno); return NULL; }
  return undef(env);
}

static napi_value m_vnet(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  tun_t *t = unwrap(env, info, &argc, NULL, "vnetHeader", true);
  if (!t) return NULL;
  napi_value v;
  napi_create_uint32(env, (uint32_t)t->vnet, &v);
  return v;
}

/* ---------- stats / close ---------- */

static void put(napi_env env, napi_value obj, const char *k, uint64_t v) {
  napi_value n;
  napi_create_double(env, (double)v, &n);
  napi_set_named_property(env, obj, k, n);
}

/* Allowed after close so a shutting-down daemon can log final counters. */
static napi_value m_stats(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  tun_t *t = unwrap(env, info, &argc, NULL, "stats", true);
  if (!t) return NULL;
  napi_value o;
  napi_create_object(env, &o);
  put(env, o, "rxPackets", t->rx_packets);
  put(env, o, "rxBytes", t->rx_bytes);
  put(env, o, "txPackets", t->tx_packets);
  put(env, o, "txBytes", t->tx_bytes);
  put(env, o, "txDrops", t->tx_drops);
  put(env, o, "rxErrors", t->rx_errors);
  put(env, o, "rxBatches", t->rx_batches);
  return o;
}

static napi_value m_close(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  tun_t *t = unwrap(env, info, &argc, NULL, "close", true);
  if (!t) return NULL;
  if (!t->closed) {
    t->closed = true;
    release_os(t);
    if (!t->in_callback) release_js(t); /* else deliver() does it once make_callback returns */
  }
  return undef(env);
}

/* ---------- capabilities passed on to children ----------
 *
 * Not TUN as such, but this is the daemon's one native addon, and Node has no prctl(2) or capset(2).
 * Both act on the calling thread only: Node calls these on its main thread, which is also the thread
 * child_process forks from, so that is the thread whose sets children start from.
 */

/* Older kernel headers (Linux < 4.3) lack the ambient set; the kernel then fails with EINVAL. */
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#endif
#ifndef PR_CAP_AMBIENT_CLEAR_ALL
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

/* prctl(PR_CAP_AMBIENT_CLEAR_ALL). Needs no privilege, and prctl is in systemd's @system-service. */
static napi_value f_clear_ambient(napi_env env, napi_callback_info info) {
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) {
    throw_sys(env, "prctl", "prctl", "PR_CAP_AMBIENT_CLEAR_ALL", errno);
    return NULL;
  }
  return undef(env);
}

/*
 * Empties the inheritable set, keeping permitted and effective. Returns false where capset(2) is refused
 * (EPERM, EACCES): lowering the inheritable set never needs a privilege, so that is a seccomp filter or
 * an LSM, which the caller may live with. Anything else is thrown.
 */
static napi_value f_clear_inheritable(napi_env env, napi_callback_info info) {
  struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
  memset(data, 0, sizeof data);
  napi_value result;
  if (syscall(SYS_capget, &head, data) != 0) {
    throw_sys(env, "capget", "capget", "(this thread)", errno);
    return NULL;
  }
  for (size_t i = 0; i < _LINUX_CAPABILITY_U32S_3; i++) data[i].inheritable = 0;
  if (syscall(SYS_capset, &head, data) != 0) {
    int e = errno;
    if (e != EPERM && e != EACCES) {
      throw_sys(env, "capset", "capset", "(inheritable set)", e);
      return NULL;
    }
    napi_get_boolean(env, false, &result);
    return result;
  }
  napi_get_boolean(env, true, &result);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "clearAmbientCapabilities", NAPI_AUTO_LENGTH, f_clear_ambient, NULL, &fn) != napi_ok ||
      napi_set_named_property(env, exports, "clearAmbientCapabilities", fn) != napi_ok ||
      napi_create_function(env, "clearInheritableCapabilities", NAPI_AUTO_LENGTH, f_clear_inheritable, NULL, &fn) != napi_ok ||
      napi_set_named_property(env, exports, "clearInheritableCapabilities", fn) != napi_ok)
    return NULL;
  napi_property_descriptor props[] = {
    {"getName", NULL, m_name, NULL, NULL, NULL, napi_default, NULL},
    {"setMtu", NULL, m_set_mtu, NULL, NULL, NULL, napi_default, NULL},
    {"setAddress", NULL, m_set_address, NULL, NULL, NULL, napi_default, NULL},
    {"addAddress6", NULL, m_add_address6, NULL, NULL, NULL, napi_default, NULL},
    {"addRoute", NULL, m_add_route, NULL, NULL, NULL, napi_default, NULL},
    {"setUp", NULL, m_set_up, NULL, NULL, NULL, napi_default, NULL},
    {"start", NULL, m_start, NULL, NULL, NULL, napi_default, NULL},
    {"pause", NULL, m_pause, NULL, NULL, NULL, napi_default, NULL},
    {"resume", NULL, m_resume, NULL, NULL, NULL, napi_default, NULL},
    {"writeBatch", NULL, m_write_batch, NULL, NULL, NULL, napi_default, NULL},
    {"writePacket", NULL, m_write_packet, NULL, NULL, NULL, napi_default, NULL},
    {"stats", NULL, m_stats, NULL, NULL, NULL, napi_default, NULL},
    {"setOffload", NULL, m_set_offload, NULL, NULL, NULL, napi_default, NULL},
    {"vnetHeader", NULL, m_vnet, NULL, NULL, NULL, napi_default, NULL},
    {"close", NULL, m_close, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_value cls;
  if (napi_define_class(env, "TunHandle", NAPI_AUTO_LENGTH, m_new, NULL,
                        sizeof props / sizeof props[0], props, &cls) != napi_ok ||
      napi_set_named_property(env, exports, "TunHandle", cls) != napi_ok)
    return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
