package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// hostNetns is the namespace localnode starts in; a thread lent to a Pod's
// namespace returns to it.
var hostNetns = func() *os.File {
	f, err := os.Open("/proc/self/ns/net")
	if err != nil {
		panic(fmt.Sprintf("localnode: open the host's network namespace: %v", err))
	}
	return f
}()

// netns is a network namespace held open by its file; it is gone once the file
// is closed and no process or socket is left in it.
type netns struct {
	// Read-held while the file is handed to the kernel, so close waits for
	// that and its number is never reused under a caller.
	mu sync.RWMutex
	f  *os.File // nil once closed
}

var errNetnsClosed = errors.New("the Pod's network namespace is gone")

// newNetns makes a network namespace whose only interface is lo, up; a
// routed one routes loopback-range addresses through its other interfaces.
func newNetns(routed bool) (*netns, error) {
	var f *os.File
	err := onThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		var err error
		if f, err = os.Open("/proc/thread-self/ns/net"); err != nil {
			return err
		}
		err = loopbackUp()
		if err == nil && routed {
			err = routeLocalnet()
		}
		if err != nil {
			f.Close()
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("network namespace: %w", err)
	}
	return &netns{f: f}, nil
}

// onThread runs f on a thread of its own, which then returns to the host's
// network namespace before it runs anything else.
func onThread(f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err := f()
		if back := unix.Setns(int(hostNetns.Fd()), unix.CLONE_NEWNET); back != nil {
			// The thread stays locked, so it ends with this goroutine
			// instead of serving others in another namespace.
			done <- errors.Join(err, back)
			return
		}
		runtime.UnlockOSThread()
		done <- err
	}()
	return <-done
}

// use hands the namespace's file to f, unless it is closed.
func (n *netns) use(f func(*os.File) error) error {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.f == nil {
		return errNetnsClosed
	}
	return f(n.f)
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}

// routeLocalnet lets loopback-range addresses be routed through the
// namespace's other interfaces: Pods' addresses are in 127/8. (/proc/sys/net
// is the namespace of the thread that opens it.)
func routeLocalnet() error {
	var errs []error
	for _, conf := range []string{"all", "default"} { // default: for eth0, made later
		errs = append(errs, os.WriteFile("/proc/sys/net/ipv4/conf/"+conf+"/route_localnet", []byte("1"), 0))
	}
	return errors.Join(errs...)
}

// handle is a netlink handle that acts on the namespace.
func (n *netns) handle() (h *netlink.Handle, err error) {
	err = n.use(func(f *os.File) error {
		h, err = netlink.NewHandleAt(vnetns.NsHandle(int(f.Fd())))
		return err
	})
	return h, err
}

// do runs f on a thread inside the namespace: sockets f makes live there.
func (n *netns) do(f func() error) error {
	return onThread(func() error {
		err := n.use(func(ns *os.File) error { return unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET) })
		if err != nil {
			return fmt.Errorf("enter the Pod's network namespace: %w", err)
		}
		return f()
	})
}

func (n *netns) listen(addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.do(func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}

func (n *netns) dial(ctx context.Context, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// listening is the set of TCP ports something in the namespace listens on at
// an address others can reach: any address, or ip.
func (n *netns) listening(ip netip.Addr) (map[uint16]bool, error) {
	ports := map[uint16]bool{}
	err := n.do(func() error {
		for _, file := range []string{"tcp", "tcp6"} {
			f, err := os.Open("/proc/thread-self/net/" + file)
			if err != nil {
				return err
			}
			err = listeningPorts(f, ip, ports)
			f.Close()
			if err != nil {
				return err
			}
		}
		return nil
	})
	return ports, err
}

func (n *netns) close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.f == nil {
		return nil
	}
	err := n.f.Close()
	n.f = nil
	return err
}

// listeningPorts adds the ports of the LISTEN sockets of a /proc/net/tcp or
// tcp6 table bound to an unspecified address or to ip.
func listeningPorts(r io.Reader, ip netip.Addr, ports map[uint16]bool) error {
	scanner := bufio.NewScanner(r)
	scanner.Scan() // the header
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) < 4 || fields[3] != "0A" { // TCP_LISTEN
			continue
		}
		hostHex, portHex, ok := strings.Cut(fields[1], ":")
		if !ok {
			return fmt.Errorf("bad socket address %q", fields[1])
		}
		addr, err := procAddr(hostHex)
		if err != nil {
			return err
		}
		port, err := strconv.ParseUint(portHex, 16, 16)
		if err != nil {
			return fmt.Errorf("bad port %q", portHex)
		}
		if addr.IsUnspecified() || addr.Unmap() == ip {
			ports[uint16(port)] = true
		}
	}
	return scanner.Err()
}

// procAddr reads an address as /proc/net/tcp* prints it: 32-bit words in the
// host's (little-endian) byte order.
func procAddr(s string) (netip.Addr, error) {
	raw, err := hex.DecodeString(s)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.Addr{}, fmt.Errorf("bad address %q", s)
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	addr, _ := netip.AddrFromSlice(raw)
	return addr, nil
}
