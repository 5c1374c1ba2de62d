package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// kubeletServer answers the part of the kubelet API the API server proxies for
// `kubectl logs` (GET /containerLogs/{namespace}/{pod}/{container}) and
// `kubectl port-forward` (POST /portForward/{namespace}/{pod}). Only clients
// with a certificate from the cluster CA (the API server) are served.
func kubeletServer(addr, certFile, keyFile, clientCA, logDir string, pods *podManager) (*http.Server, error) {
	caPEM, err := os.ReadFile(clientCA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no certificate in %s", clientCA)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", func(w http.ResponseWriter, r *http.Request) {
		serveLogs(w, r, logDir)
	})
	mux.HandleFunc("POST /portForward/{namespace}/{pod}", pods.servePortForward)
	mux.HandleFunc("GET /portForward/{namespace}/{pod}", pods.servePortForward)
	return &http.Server{
		Addr:              addr,
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientCAs:    pool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS12,
		},
	}, nil
}

func serveLogs(w http.ResponseWriter, r *http.Request, logDir string) {
	name := fmt.Sprintf("%s_%s_%s.log", r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container"))
	if strings.Contains(name, "/") {
		http.Error(w, "bad name", http.StatusBadRequest)
		return
	}
	f, err := os.Open(filepath.Join(logDir, "pods", name))
	if errors.Is(err, os.ErrNotExist) {
		http.Error(w, "container has not written a log yet", http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	q := r.URL.Query()
	if tail, err := strconv.Atoi(q.Get("tailLines")); err == nil && tail >= 0 {
		if err := seekToLastLines(f, tail); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	var out io.Writer = w
	if limit, err := strconv.ParseInt(q.Get("limitBytes"), 10, 64); err == nil && limit > 0 {
		out = &limitedWriter{w: w, n: limit}
	}
	w.Header().Set("Content-Type", "text/plain")
	if _, err := io.Copy(out, f); err != nil {
		return
	}
	if q.Get("follow") != "true" {
		return
	}
	flusher, _ := w.(http.Flusher)
	for {
		if flusher != nil {
			flusher.Flush()
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
		if _, err := io.Copy(out, f); err != nil {
			return
		}
	}
}

// seekToLastLines positions f at the start of its last n lines.
func seekToLastLines(f *os.File, n int) error {
	var offsets []int64
	var pos int64
	reader := bufio.NewReader(f)
	for {
		line, err := reader.ReadBytes('\n')
		if len(line) > 0 {
			offsets = append(offsets, pos)
			pos += int64(len(line))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	start := pos // no lines
	switch {
	case n <= 0 || len(offsets) == 0:
	case n >= len(offsets):
		start = offsets[0]
	default:
		start = offsets[len(offsets)-n]
	}
	_, err := f.Seek(start, io.SeekStart)
	return err
}

type limitedWriter struct {
	w io.Writer
	n int64
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.w.Write(p)
	l.n -= int64(n)
	return n, err
}
