package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
)

// The Pod network. Each Pod has a network namespace of its own and an address
// of its own in 127.244.0.0/16, so Pods may listen on the same ports. Nothing
// touches the host's network but listeners on its loopback:
//
//   - Pods reach each other by address: each namespace has an eth0 with the
//     Pod's address, one end of a veth pair whose other end is on a bridge in
//     a hub namespace of the node's own. Loopback-range addresses are routed
//     there (route_localnet), and each namespace's lo keeps only 127.0.0.1.
//   - Pods reach the stack's services at their own 127.0.0.1: a listener on
//     127.0.0.1:port inside the namespace connects out to 127.0.0.1:port on
//     the host, for each of the node's service ports.
//   - The host reaches a Pod at podIP:port: a listener there on the host's
//     loopback connects to podIP:port inside the namespace, for each port the
//     Pod listens on (any address or its own), followed as it opens and closes
//     them.
type network struct {
	log      *slog.Logger
	services []uint16

	mu     sync.Mutex
	hub    *netns
	bridge int // its index in the hub
	pods   map[*podNet]bool
	used   map[netip.Addr]bool
	next   int // where the search for a free address starts
}

func newNetwork(services []uint16, log *slog.Logger) *network {
	return &network{log: log, services: services, pods: map[*podNet]bool{}, used: map[netip.Addr]bool{}}
}

// podNet is one Pod's namespace, address and forwards.
type podNet struct {
	ip    netip.Addr
	ns    *netns
	veth  string // its end on the hub's bridge
	log   *slog.Logger
	ctx   context.Context
	close context.CancelFunc

	services []net.Listener // in the namespace, the stack's service ports

	// Guarded by network.mu.
	listening map[uint16]net.Listener // podIP:port on the host
}

const podPrefix = 16 // 127.244.0.0/16

// podAddr is the n-th Pod address, 127.244.0.1 onwards.
func podAddr(n int) netip.Addr {
	n++
	return netip.AddrFrom4([4]byte{127, 244, byte(n >> 8), byte(n)})
}

func (nw *network) allocate(want netip.Addr) (netip.Addr, error) {
	if isPodAddr(want) && !nw.used[want] {
		nw.used[want] = true
		return want, nil
	}
	// Round the range, as host-local IPAM does: an address just freed is
	// the last to be given again, so nothing meant for a deleted Pod
	// reaches a new one.
	const size = 1<<podPrefix - 2
	for i := 0; i < size; i++ {
		n := (nw.next + i) % size
		if ip := podAddr(n); !nw.used[ip] {
			nw.used[ip] = true
			nw.next = n + 1
			return ip, nil
		}
	}
	return netip.Addr{}, errors.New("no Pod address left in 127.244.0.0/16")
}

var podAddrPrefix = netip.MustParsePrefix("127.244.0.0/16")

// isPodAddr: in the range, neither its network nor its broadcast address.
func isPodAddr(ip netip.Addr) bool {
	if !ip.IsValid() || !ip.Is4() || !podAddrPrefix.Contains(ip) {
		return false
	}
	b := ip.As4()
	host := int(b[2])<<8 | int(b[3])
	return host != 0 && host != 1<<podPrefix-1
}

// hubLocked makes the hub namespace and its bridge on first use; callers hold nw.mu.
func (nw *network) hubLocked() (*netlink.Handle, error) {
	if nw.hub == nil {
		// Not routed: the hub only bridges, and answers for no address.
		hub, err := newNetns(false)
		if err != nil {
			return nil, fmt.Errorf("hub: %w", err)
		}
		h, err := hub.handle()
		if err != nil {
			hub.close()
			return nil, err
		}
		bridge := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "pods"}}
		if err := h.LinkAdd(bridge); err != nil {
			h.Close()
			hub.close()
			return nil, fmt.Errorf("hub bridge: %w", err)
		}
		if err := h.LinkSetUp(bridge); err != nil {
			h.Close()
			hub.close()
			return nil, fmt.Errorf("hub bridge up: %w", err)
		}
		nw.hub, nw.bridge = hub, bridge.Attrs().Index
		return h, nil
	}
	return nw.hub.handle()
}

// attach gives a Pod its namespace: want is the address it had before a
// restart of the node, if any; own are the ports it declares, which the
// stack's services must not take from it.
func (nw *network) attach(want netip.Addr, own map[uint16]bool, log *slog.Logger) (*podNet, error) {
	ns, err := newNetns(true)
	if err != nil {
		return nil, err
	}
	nw.mu.Lock()
	defer nw.mu.Unlock()
	ip, err := nw.allocate(want)
	if err != nil {
		ns.close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &podNet{
		ip: ip, ns: ns, log: log.With("podIP", ip.String()), ctx: ctx, close: cancel,
		veth:      fmt.Sprintf("pod%d-%d", ip.As4()[2], ip.As4()[3]),
		listening: map[uint16]net.Listener{},
	}
	if err := nw.wire(p); err != nil {
		nw.release(p)
		return nil, err
	}
	for _, port := range nw.services {
		if own[port] {
			continue
		}
		target := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
		ln, err := ns.listen(target)
		if err != nil {
			nw.release(p)
			return nil, fmt.Errorf("service port %d in the Pod: %w", port, err)
		}
		p.services = append(p.services, ln)
		go p.serve(ln, func(ctx context.Context) (net.Conn, error) { return hostDial(ctx, target) })
	}
	nw.pods[p] = true
	return p, nil
}

// wire connects the Pod's namespace to the hub; callers hold nw.mu.
func (nw *network) wire(p *podNet) error {
	hub, err := nw.hubLocked()
	if err != nil {
		return err
	}
	defer hub.Close()
	pod, err := p.ns.handle()
	if err != nil {
		return err
	}
	defer pod.Close()
	// lo keeps 127.0.0.1 only, so the rest of 127/8 is routed: to other Pods.
	lo, err := pod.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := pod.AddrDel(lo, mustAddr("127.0.0.1/8")); err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	if err := pod.AddrAdd(lo, mustAddr("127.0.0.1/32")); err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	_ = hub.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: p.veth}}) // one a crashed start left
	err = p.ns.use(func(f *os.File) error {
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: p.veth, MasterIndex: nw.bridge},
			PeerName:      "eth0",
			PeerNamespace: netlink.NsFd(f.Fd()),
		}
		if err := hub.LinkAdd(veth); err != nil {
			return fmt.Errorf("veth: %w", err)
		}
		if err := hub.LinkSetUp(veth); err != nil {
			return fmt.Errorf("veth up: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	eth0, err := pod.LinkByName("eth0")
	if err != nil {
		return err
	}
	if err := pod.AddrAdd(eth0, mustAddr(fmt.Sprintf("%s/%d", p.ip, podPrefix))); err != nil {
		return fmt.Errorf("eth0 address: %w", err)
	}
	if err := pod.LinkSetUp(eth0); err != nil {
		return fmt.Errorf("eth0 up: %w", err)
	}
	return nil
}

func mustAddr(s string) *netlink.Addr {
	a, err := netlink.ParseAddr(s)
	if err != nil {
		panic(err)
	}
	return a
}

// detach ends every forward of the Pod and its connections, and takes its
// end off the hub; the kernel removes the namespace once nothing is in it.
func (nw *network) detach(p *podNet) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	delete(nw.pods, p)
	nw.release(p)
}

// release closes what the Pod holds; callers hold nw.mu.
func (nw *network) release(p *podNet) {
	p.close()
	// Each listener would keep the namespace alive.
	for _, ln := range p.services {
		ln.Close()
	}
	for _, ln := range p.listening {
		ln.Close()
	}
	if nw.hub != nil {
		// Removed now, not when the kernel gets to the namespace, so the
		// address and its veth name are free for the next Pod at once.
		if hub, err := nw.hub.handle(); err == nil {
			_ = hub.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: p.veth}})
			hub.Close()
		}
	}
	p.ns.close()
	delete(nw.used, p.ip)
}

// follow makes the host's listeners for the Pod match what it listens on now.
func (nw *network) follow(p *podNet) error {
	now, err := p.ns.listening(p.ip)
	if err != nil {
		return err
	}
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if !nw.pods[p] {
		return nil // detached meanwhile
	}
	var errs []error
	for port := range now {
		if p.listening[port] != nil {
			continue
		}
		addr := net.JoinHostPort(p.ip.String(), strconv.Itoa(int(port)))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("host listener for %s: %w", addr, err))
			continue
		}
		go p.serve(ln, func(ctx context.Context) (net.Conn, error) { return p.ns.dial(ctx, addr) })
		p.listening[port] = ln
	}
	for port, ln := range p.listening {
		if !now[port] {
			ln.Close()
			delete(p.listening, port)
		}
	}
	return errors.Join(errs...)
}

func hostDial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// serve forwards each connection ln accepts to what dial reaches, until ln
// is closed; the Pod's detach ends the connections too.
func (p *podNet) serve(ln net.Listener, dial func(context.Context) (net.Conn, error)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.log.Warn("forward stopped", "listener", ln.Addr().String(), "err", err)
			}
			return
		}
		go p.pipe(c, dial)
	}
}

func (p *podNet) pipe(c net.Conn, dial func(context.Context) (net.Conn, error)) {
	defer c.Close()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	upstream, err := dial(ctx)
	cancel()
	if err != nil {
		// Nothing listens there: the client sees a reset, as it would a refusal.
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		return
	}
	defer upstream.Close()
	stop := context.AfterFunc(p.ctx, func() { c.Close(); upstream.Close() })
	defer stop()
	done := make(chan struct{})
	go func() {
		copyThenCloseWrite(upstream, c)
		close(done)
	}()
	copyThenCloseWrite(c, upstream)
	<-done
}

// copyThenCloseWrite copies until src ends, then passes the end on; an error
// ends both directions.
func copyThenCloseWrite(dst, src net.Conn) {
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		src.Close()
		return
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
		return
	}
	dst.Close()
}

// attachNetwork gives the Pod its namespace, retrying like a sandbox that
// fails to start; nil (and true) for a Pod on the host's network.
func (w *podWorker) attachNetwork() (*podNet, bool) {
	if w.pod.Spec.HostNetwork {
		w.update(func(s *podState) { s.podIP = "127.0.0.1" })
		return nil, true
	}
	own := map[uint16]bool{}
	for _, c := range w.allContainers() {
		for _, port := range c.Ports {
			own[uint16(port.ContainerPort)] = true
		}
	}
	ipFile := filepath.Join(w.dir, "ip")
	for {
		// The address it had before the node restarted, if it is free.
		was, _ := os.ReadFile(ipFile)
		want, _ := netip.ParseAddr(strings.TrimSpace(string(was)))
		pn, err := w.m.net.attach(want, own, w.log)
		if err == nil {
			_ = os.MkdirAll(w.dir, 0o755)
			_ = os.WriteFile(ipFile, []byte(pn.ip.String()), 0o644)
			w.update(func(s *podState) { s.podIP = pn.ip.String() })
			w.mu.Lock()
			w.net = pn
			w.mu.Unlock()
			w.log.Info("pod network ready", "podIP", pn.ip)
			return pn, true
		}
		w.log.Warn("pod network not ready", "err", err)
		w.update(func(s *podState) {
			for _, st := range append(append([]*containerState{}, s.init...), s.main...) {
				st.waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating", Message: "pod network: " + err.Error()}
			}
		})
		if !w.wait(retryInterval) {
			return nil, false
		}
	}
}

// followPorts keeps the Pod's forwards matching what it listens on.
func (w *podWorker) followPorts(ctx context.Context, pn *podNet) {
	said := "" // a failure is said once, not twice a second
	for sleepCtx(ctx, followInterval) {
		err := w.m.net.follow(pn)
		if err == nil {
			said = ""
		} else if err.Error() != said {
			said = err.Error()
			w.log.Warn("pod ports not followed", "err", err)
		}
	}
}

const followInterval = 500 * time.Millisecond

func (w *podWorker) followNow() {
	w.mu.Lock()
	pn := w.net
	w.mu.Unlock()
	if pn == nil {
		return
	}
	if err := w.m.net.follow(pn); err != nil {
		w.log.Warn("pod ports not followed", "err", err)
	}
}

func (w *podWorker) podIP() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state.podIP
}

// dial reaches addr from inside the Pod.
func (w *podWorker) dial(ctx context.Context, addr string) (net.Conn, error) {
	if w.pod.Spec.HostNetwork {
		return hostDial(ctx, addr)
	}
	w.mu.Lock()
	pn := w.net
	w.mu.Unlock()
	if pn == nil {
		return nil, errors.New("the Pod's network is not ready")
	}
	return pn.ns.dial(ctx, addr)
}
