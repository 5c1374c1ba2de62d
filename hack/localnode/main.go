// Command localnode stands in for a kubelet on a machine with no container
// runtime: it registers a Node, keeps it Ready, and runs every Pod bound to it as
// local processes with the Pod's command, environment and volumes, reporting the
// Pod's true status.
//
// Each container runs in a private mount namespace where the Pod's volumes are
// bind-mounted at their real mountPath (so in-cluster clients find their token at
// /var/run/secrets/kubernetes.io/serviceaccount), and in its Pod's network
// namespace, with an address of its own (network.go).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

type config struct {
	kubeconfig   string
	nodeName     string
	stateDir     string
	logDir       string
	imagesFile   string
	apiHost      string
	apiPort      string
	healthAddr   string
	kubeletAddr  string
	tlsCert      string
	tlsKey       string
	clientCA     string
	maxBackoff   time.Duration
	shutdownWait time.Duration
	volumeSync   time.Duration
	servicePorts []uint16
}

func main() {
	// The exec helper runs inside the container's new mount namespace.
	if len(os.Args) > 1 && os.Args[1] == execHelperArg {
		runExecHelper(os.Args[2:])
		return
	}

	var cfg config
	flag.StringVar(&cfg.kubeconfig, "kubeconfig", "", "kubeconfig with rights to manage nodes, pods and tokens")
	flag.StringVar(&cfg.nodeName, "node-name", "logsub-local-node", "name of the Node to register")
	flag.StringVar(&cfg.stateDir, "state-dir", "", "where pod volumes are materialized")
	flag.StringVar(&cfg.logDir, "log-dir", "", "where container output and exits are logged")
	flag.StringVar(&cfg.imagesFile, "images", "", "JSON file mapping images to local executables")
	flag.StringVar(&cfg.apiHost, "api-host", "127.0.0.1", "API server host given to pods as KUBERNETES_SERVICE_HOST")
	flag.StringVar(&cfg.apiPort, "api-port", "6443", "API server port given to pods as KUBERNETES_SERVICE_PORT")
	flag.StringVar(&cfg.healthAddr, "health-addr", "127.0.0.1:10248", "address of the /healthz endpoint")
	flag.StringVar(&cfg.kubeletAddr, "kubelet-addr", "127.0.0.1:10250", "address of the kubelet API (container logs) the API server proxies to")
	flag.StringVar(&cfg.tlsCert, "tls-cert", "", "serving certificate of the kubelet API")
	flag.StringVar(&cfg.tlsKey, "tls-key", "", "serving key of the kubelet API")
	flag.StringVar(&cfg.clientCA, "client-ca", "", "CA that signs the API server's client certificate")
	flag.DurationVar(&cfg.maxBackoff, "max-restart-backoff", 30*time.Second, "cap of the crash-loop restart delay")
	flag.DurationVar(&cfg.shutdownWait, "shutdown-grace", 10*time.Second, "grace given to containers when localnode stops")
	flag.DurationVar(&cfg.volumeSync, "volume-sync-period", 5*time.Second, "how often a running Pod's Secret, ConfigMap and downward API volumes are brought up to date")
	flag.Func("service-ports", "comma-separated ports of the host's 127.0.0.1 that every Pod reaches at its own 127.0.0.1", func(v string) (err error) {
		cfg.servicePorts, err = parsePorts(v)
		return err
	})
	flag.Parse()
	if cfg.kubeconfig == "" || cfg.stateDir == "" || cfg.logDir == "" || cfg.imagesFile == "" {
		fmt.Fprintln(os.Stderr, "localnode: --kubeconfig, --state-dir, --log-dir and --images are required")
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(cfg, log); err != nil {
		log.Error("localnode failed", "err", err)
		os.Exit(1)
	}
}

// parsePorts reads "6443,9200": each port once.
func parsePorts(v string) ([]uint16, error) {
	var ports []uint16
	seen := map[uint64]bool{}
	for _, field := range strings.Split(v, ",") {
		if field = strings.TrimSpace(field); field == "" {
			continue
		}
		p, err := strconv.ParseUint(field, 10, 16)
		if err != nil || p == 0 {
			return nil, fmt.Errorf("bad port %q", field)
		}
		if !seen[p] {
			seen[p] = true
			ports = append(ports, uint16(p))
		}
	}
	return ports, nil
}

func kubeletPort(addr string) int32 {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	p, _ := strconv.Atoi(port)
	return int32(p)
}

func run(cfg config, log *slog.Logger) error {
	restCfg, err := clientcmd.BuildConfigFromFlags("", cfg.kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	restCfg.QPS, restCfg.Burst = 50, 100
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return err
	}
	for _, dir := range []string{cfg.stateDir, filepath.Join(cfg.logDir, "pods")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	node := &nodeAgent{client: client, name: cfg.nodeName, log: log, kubeletPort: kubeletPort(cfg.kubeletAddr)}
	if err := node.register(ctx); err != nil {
		return fmt.Errorf("register node: %w", err)
	}
	go node.heartbeat(ctx)

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	server := &http.Server{Addr: cfg.healthAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := server.ListenAndServe(); err != nil && err != http.ErrServerClosed {
			log.Error("health endpoint", "err", err)
		}
	}()

	pods := newPodManager(cfg, client, log)
	if cfg.tlsCert != "" {
		kubelet, err := kubeletServer(cfg.kubeletAddr, cfg.tlsCert, cfg.tlsKey, cfg.clientCA, cfg.logDir, pods)
		if err != nil {
			return fmt.Errorf("kubelet API: %w", err)
		}
		go func() {
			if err := kubelet.ListenAndServeTLS("", ""); err != nil && err != http.ErrServerClosed {
				log.Error("kubelet API", "err", err)
			}
		}()
		defer kubelet.Close()
	}

	log.Info("local node running", "node", cfg.nodeName)
	pods.run(ctx)

	// Like a kubelet going down: containers stop, Pods stay bound.
	log.Info("stopping containers")
	pods.stopAll(cfg.shutdownWait)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = server.Shutdown(shutdownCtx)
	return nil
}
