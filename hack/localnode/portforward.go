package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"
)

// portForwardProtocol is what the API server speaks to a kubelet for
// `kubectl port-forward` (it turns the client's WebSocket into it).
const portForwardProtocol = "portforward.k8s.io"

// servePortForward answers POST /portForward/{namespace}/{pod}: each pair of
// streams (data, error) with one requestID is one connection to a port of the
// Pod, made from inside its network namespace to 127.0.0.1, as a container
// runtime does.
func (m *podManager) servePortForward(w http.ResponseWriter, r *http.Request) {
	worker := m.running(r.PathValue("namespace"), r.PathValue("pod"))
	if worker == nil {
		http.Error(w, "pod not running on this node", http.StatusNotFound)
		return
	}
	if _, err := httpstream.Handshake(r, w, []string{portForwardProtocol}); err != nil {
		return // Handshake has answered
	}
	streams := make(chan httpstream.Stream, 8)
	conn := spdy.NewResponseUpgrader().UpgradeResponse(w, r, func(s httpstream.Stream, _ <-chan struct{}) error {
		if _, err := strconv.ParseUint(s.Headers().Get(corev1.PortHeader), 10, 16); err != nil {
			return fmt.Errorf("bad %s header %q", corev1.PortHeader, s.Headers().Get(corev1.PortHeader))
		}
		switch t := s.Headers().Get(corev1.StreamType); t {
		case corev1.StreamTypeData, corev1.StreamTypeError:
		default:
			return fmt.Errorf("bad %s header %q", corev1.StreamType, t)
		}
		streams <- s
		return nil
	})
	if conn == nil {
		return // the upgrade has answered
	}
	defer conn.Close()
	conn.SetIdleTimeout(4 * time.Hour) // the kubelet's default streaming idle timeout
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	type pair struct{ data, errs httpstream.Stream }
	pending := map[string]*pair{}
	for {
		select {
		case <-conn.CloseChan():
			return
		case <-worker.stop:
			return
		case s := <-streams:
			id := s.Headers().Get(corev1.PortForwardRequestIDHeader)
			p := pending[id]
			if p == nil {
				p = &pair{}
				pending[id] = p
			}
			if s.Headers().Get(corev1.StreamType) == corev1.StreamTypeData {
				p.data = s
			} else {
				p.errs = s
			}
			if p.data != nil && p.errs != nil {
				delete(pending, id)
				go worker.forwardPort(ctx, p.data, p.errs)
			}
		}
	}
}

// forwardPort connects one data stream to its port inside the Pod (at
// 127.0.0.1, else at the Pod's address, as containerd does); a failure is
// written to the error stream, as the kubelet writes it.
func (w *podWorker) forwardPort(ctx context.Context, data, errs httpstream.Stream) {
	defer data.Close()
	defer errs.Close()
	port := data.Headers().Get(corev1.PortHeader)
	dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	c, err := w.dial(dialCtx, net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		if ip := w.podIP(); ip != "" && ip != "127.0.0.1" {
			c, err = w.dial(dialCtx, net.JoinHostPort(ip, port))
		}
	}
	cancel()
	if err != nil {
		fmt.Fprintf(errs, "error forwarding port %s to pod %s, uid %s: %v", port, w.pod.Name, w.pod.UID, err)
		return
	}
	defer c.Close()
	// The client's end is passed on as a half-close, so a request sent whole
	// still gets its answer; the Pod's end, or a broken stream, ends it all.
	go func() {
		if _, err := io.Copy(c, data); err != nil {
			c.Close()
			return
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	answered := make(chan struct{})
	go func() { _, _ = io.Copy(data, c); close(answered) }()
	select {
	case <-answered:
	case <-ctx.Done():
	}
}

// running is the Pod of that name this node runs, if any.
func (m *podManager) running(namespace, name string) *podWorker {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, w := range m.workers {
		if w.pod.Namespace == namespace && w.pod.Name == name && !w.stopping() {
			return w
		}
	}
	return nil
}
