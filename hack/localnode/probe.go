package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probeOnce runs a probe once against a container whose main process is pid,
// from inside the Pod's network namespace, at the Pod's address as the
// kubelet does.
func (w *podWorker) probeOnce(ctx context.Context, p *corev1.Probe, c *corev1.Container, pid int) error {
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case p.HTTPGet != nil:
		port, err := resolvePort(p.HTTPGet.Port, c)
		if err != nil {
			return err
		}
		scheme := "http"
		if p.HTTPGet.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		host := p.HTTPGet.Host
		if host == "" {
			host = w.podIP()
		}
		url := fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(host, strconv.Itoa(port)), p.HTTPGet.Path)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		for _, h := range p.HTTPGet.HTTPHeaders {
			req.Header.Add(h.Name, h.Value)
		}
		client := &http.Client{Transport: &http.Transport{
			DialContext:       func(ctx context.Context, _, addr string) (net.Conn, error) { return w.dial(ctx, addr) },
			DisableKeepAlives: true,
			// As the kubelet: a probe checks that HTTPS answers, not whom.
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec
		}}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
		}
		return nil
	case p.TCPSocket != nil:
		port, err := resolvePort(p.TCPSocket.Port, c)
		if err != nil {
			return err
		}
		host := p.TCPSocket.Host
		if host == "" {
			host = w.podIP()
		}
		conn, err := w.dial(ctx, net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	case p.Exec != nil:
		// Run in the container's mount and network namespaces, as the container.
		args := append([]string{"--target", strconv.Itoa(pid), "--mount", "--net", "--"}, p.Exec.Command...)
		out, err := exec.CommandContext(ctx, "nsenter", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("exec probe: %v: %s", err, out)
		}
		return nil
	}
	return fmt.Errorf("probe type not supported by the local node")
}

func resolvePort(port intstr.IntOrString, c *corev1.Container) (int, error) {
	if port.Type == intstr.Int {
		return port.IntValue(), nil
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("no container port named %q", port.StrVal)
}

// prober tracks one probe's thresholds (the API server fills their defaults).
type prober struct {
	probe     *corev1.Probe
	successes int32
	failures  int32
	passing   bool
}

func (p *prober) observe(err error) {
	if err == nil {
		p.failures = 0
		p.successes++
		if p.successes >= max(p.probe.SuccessThreshold, 1) {
			p.passing = true
		}
		return
	}
	p.successes = 0
	p.failures++
	if p.failed() {
		p.passing = false
	}
}

func (p *prober) failed() bool {
	return p.failures >= max(p.probe.FailureThreshold, 1)
}

func period(p *corev1.Probe) time.Duration {
	return time.Duration(max(p.PeriodSeconds, 1)) * time.Second
}
