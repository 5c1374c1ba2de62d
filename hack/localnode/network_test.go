package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestListeningPortsReadsTheProcTables(t *testing.T) {
	pod := netip.MustParseAddr("127.244.0.3")
	tcp := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0300F47F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
   3: 0400F47F:1F92 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
   4: 0300F47F:1F93 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 5 1 0 100 0 0 10 0
`
	tcp6 := `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6 1 0 100 0 0 10 0
   1: 0000000000000000FFFF00000300F47F:2329 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7 1 0 100 0 0 10 0
   2: 00000000000000000000000001000000:232A 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 8 1 0 100 0 0 10 0
`
	ports := map[uint16]bool{}
	for _, table := range []string{tcp, tcp6} {
		if err := listeningPorts(strings.NewReader(table), pod, ports); err != nil {
			t.Fatal(err)
		}
	}
	// Any address (8080, 9000) or the Pod's own (8081, v4-mapped 9001); not
	// 127.0.0.1 (3306), another Pod's address (8082), ::1 (9002) or a
	// connected socket (8083).
	want := map[uint16]bool{8080: true, 8081: true, 9000: true, 9001: true}
	if len(ports) != len(want) {
		t.Fatalf("ports %v, want %v", ports, want)
	}
	for p := range want {
		if !ports[p] {
			t.Errorf("port %d missing from %v", p, ports)
		}
	}
	if err := listeningPorts(strings.NewReader("header\n 0: zz:1F90 0 0A\n"), pod, ports); err == nil {
		t.Error("a bad address is an error")
	}
}

// greet answers every connection with name, then closes it.
func greet(t *testing.T, ln net.Listener, name string) {
	t.Helper()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(name))
			c.Close()
		}
	}()
}

func read(t *testing.T, dial func(context.Context, string) (net.Conn, error), addr string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := dial(ctx, addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err == nil && len(b) == 0 {
		err = io.EOF // accepted and closed: nothing there
	}
	return string(b), err
}

// Two Pods listen on one port, each in its namespace at its own address: the
// host reaches each at its address, a Pod reaches the other by address and
// the stack's services at 127.0.0.1, and a port closed or a Pod detached no
// longer answers.
func TestPodsShareNoPortsAndReachEachOther(t *testing.T) {
	service, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer service.Close()
	greet(t, service, "service")
	servicePort := uint16(service.Addr().(*net.TCPAddr).Port)

	log := slog.New(slog.DiscardHandler)
	nw := newNetwork([]uint16{servicePort}, log)
	a, err := nw.attach(netip.Addr{}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	b, err := nw.attach(netip.Addr{}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.detach(a)
	if a.ip == b.ip || !a.ip.IsLoopback() || !b.ip.IsLoopback() {
		t.Fatalf("Pod addresses %s and %s", a.ip, b.ip)
	}

	inA, err := a.ns.listen("0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(inA.Addr().(*net.TCPAddr).Port)
	inB, err := b.ns.listen("0.0.0.0:" + port)
	if err != nil {
		t.Fatalf("the same port in a second Pod: %v", err)
	}
	greet(t, inA, "a")
	greet(t, inB, "b")
	for _, p := range []*podNet{a, b} {
		if err := nw.follow(p); err != nil {
			t.Fatal(err)
		}
	}

	addrA, addrB := net.JoinHostPort(a.ip.String(), port), net.JoinHostPort(b.ip.String(), port)
	for addr, want := range map[string]string{addrA: "a", addrB: "b"} {
		if got, err := read(t, hostDial, addr); err != nil || got != want {
			t.Errorf("from the host, %s answered %q, %v; want %q", addr, got, err, want)
		}
	}
	if got, err := read(t, a.ns.dial, addrB); err != nil || got != "b" {
		t.Errorf("from Pod a, %s answered %q, %v", addrB, got, err)
	}
	if got, err := read(t, b.ns.dial, addrA); err != nil || got != "a" {
		t.Errorf("from Pod b, %s answered %q, %v", addrA, got, err)
	}
	serviceAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(servicePort)))
	if got, err := read(t, a.ns.dial, serviceAddr); err != nil || got != "service" {
		t.Errorf("from Pod a, the service answered %q, %v", got, err)
	}

	inA.Close()
	if err := nw.follow(a); err != nil {
		t.Fatal(err)
	}
	if got, err := read(t, hostDial, addrA); err == nil {
		t.Errorf("a closed port answered %q", got)
	}
	if got, err := read(t, b.ns.dial, addrA); err == nil {
		t.Errorf("a closed port answered Pod b with %q", got)
	}

	nw.detach(b)
	if got, err := read(t, hostDial, addrB); err == nil {
		t.Errorf("a detached Pod answered %q", got)
	}
	if got, err := read(t, a.ns.dial, addrB); err == nil {
		t.Errorf("a detached Pod answered Pod a with %q", got)
	}
	// The next Pod gets an address no Pod had lately; a restarted node's
	// Pod gets back the one it had, once free.
	c, err := nw.attach(netip.Addr{}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.detach(c)
	if c.ip == a.ip || c.ip == b.ip {
		t.Errorf("next Pod got %s, given lately", c.ip)
	}
	again, err := nw.attach(b.ip, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.detach(again)
	if again.ip != b.ip {
		t.Errorf("Pod got %s, not the %s it had", again.ip, b.ip)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// churn attaches n Pods one after the other, follows and detaches each, and
// returns the last.
func churn(t *testing.T, nw *network, n int) (last *podNet) {
	t.Helper()
	for i := 0; i < n; i++ {
		p, err := nw.attach(netip.Addr{}, nil, nw.log)
		if err != nil {
			t.Fatal(err)
		}
		if err := nw.follow(p); err != nil {
			t.Fatal(err)
		}
		nw.detach(p)
		last = p
	}
	return last
}

// Detached, a Pod leaves nothing open behind: no listener keeps its
// namespace alive, and nothing can enter it any more.
func TestDetachedPodsLeaveNothingOpen(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	nw := newNetwork([]uint16{1, 2, 3}, log)
	warm, err := nw.attach(netip.Addr{}, nil, log) // the hub, made once
	if err != nil {
		t.Fatal(err)
	}
	defer nw.detach(warm)
	before := openFDs(t)
	last := churn(t, nw, 20)
	if after := openFDs(t); after > before+2 {
		t.Errorf("%d files open after 20 Pods came and went, %d before", after, before)
	}
	if _, err := last.ns.dial(context.Background(), "127.0.0.1:1"); !errors.Is(err, errNetnsClosed) {
		t.Errorf("a detached Pod's namespace was entered: %v", err)
	}
}

// However many namespaces are made and entered, every thread of the node
// is back on the host's network after.
func TestNoThreadStaysInAPodNamespace(t *testing.T) {
	host, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	churn(t, newNetwork(nil, slog.New(slog.DiscardHandler)), 20)
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		ns, err := os.Readlink("/proc/self/task/" + task.Name() + "/ns/net")
		if err == nil && ns != host {
			t.Errorf("thread %s is in %s, not the host's %s", task.Name(), ns, host)
		}
	}
}

func TestOnlyPodAddressesAreGiven(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.244.0.1": true, "127.244.255.254": true, "127.244.1.0": true,
		"127.244.0.0": false, "127.244.255.255": false, "127.0.0.1": false, "10.0.0.1": false, "::1": false,
	} {
		if got := isPodAddr(netip.MustParseAddr(addr)); got != want {
			t.Errorf("isPodAddr(%s) = %v", addr, got)
		}
	}
	nw := newNetwork(nil, slog.New(slog.DiscardHandler))
	if ip, _ := nw.allocate(netip.MustParseAddr("127.244.255.255")); ip == netip.MustParseAddr("127.244.255.255") {
		t.Error("a restored broadcast address was given")
	}
}
