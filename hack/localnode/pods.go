package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

const retryInterval = 3 * time.Second

// podManager starts a worker for each Pod bound to this node and stops it when
// the Pod is deleted.
type podManager struct {
	cfg     config
	client  kubernetes.Interface
	log     *slog.Logger
	images  imageMap
	net     *network
	mu      sync.Mutex
	workers map[types.UID]*podWorker
}

func newPodManager(cfg config, client kubernetes.Interface, log *slog.Logger) *podManager {
	killLeftovers(filepath.Join(cfg.stateDir, "pods"), log)
	return &podManager{
		cfg: cfg, client: client, log: log,
		images:  imageMap{path: cfg.imagesFile},
		net:     newNetwork(cfg.servicePorts, log),
		workers: map[types.UID]*podWorker{},
	}
}

// killLeftovers ends process groups a previous localnode left behind (after a
// SIGKILL), so a Pod never runs twice. A pid file names its process by pid and
// start time, so a recycled pid is never killed.
func killLeftovers(dir string, log *slog.Logger) {
	pidFiles, _ := filepath.Glob(filepath.Join(dir, "*", "*.pid"))
	for _, f := range pidFiles {
		raw, err := os.ReadFile(f)
		fields := strings.Fields(string(raw))
		if err == nil && len(fields) == 2 {
			pgid, err := strconv.Atoi(fields[0])
			if err == nil && pgid > 1 && processStartTime(pgid) == fields[1] {
				if syscall.Kill(-pgid, syscall.SIGKILL) == nil {
					log.Info("killed leftover container process group", "pgid", pgid, "file", f)
				}
			}
		}
		_ = os.Remove(f)
	}
}

// processStartTime is field 22 of /proc/PID/stat, or "" when there is no such process.
func processStartTime(pid int) string {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndex(s, ")")+1:])
	if len(fields) < 20 {
		return ""
	}
	return fields[19]
}

func (m *podManager) run(ctx context.Context) {
	factory := informers.NewSharedInformerFactoryWithOptions(m.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", m.cfg.nodeName).String()
		}))
	informer := factory.Core().V1().Pods().Informer()
	_, _ = informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { m.sync(o.(*corev1.Pod)) },
		UpdateFunc: func(_, o any) { m.sync(o.(*corev1.Pod)) },
		DeleteFunc: func(o any) {
			if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			if pod, ok := o.(*corev1.Pod); ok {
				m.gone(pod)
			}
		},
	})
	factory.Start(ctx.Done())
	<-ctx.Done()
	factory.Shutdown()
}

func (m *podManager) sync(pod *corev1.Pod) {
	m.mu.Lock()
	w, known := m.workers[pod.UID]
	if !known {
		if pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			m.mu.Unlock()
			if pod.DeletionTimestamp != nil {
				// Nothing runs for it here (e.g. it finished before a restart).
				finalDelete(m.client, pod, m.log)
			}
			return
		}
		w = newPodWorker(m, pod)
		m.workers[pod.UID] = w
		go w.run()
	}
	m.mu.Unlock()
	if pod.DeletionTimestamp != nil {
		grace := ptr.Deref(pod.DeletionGracePeriodSeconds, 30)
		w.requestStop(time.Duration(grace)*time.Second, true)
	}
}

func (m *podManager) gone(pod *corev1.Pod) {
	m.mu.Lock()
	w := m.workers[pod.UID]
	delete(m.workers, pod.UID)
	m.mu.Unlock()
	if w != nil {
		// The Pod object is gone (force-deleted): stop at once.
		w.requestStop(0, false)
	}
}

// stopAll stops every container, as when the node shuts down; Pods stay bound.
func (m *podManager) stopAll(grace time.Duration) {
	m.mu.Lock()
	workers := make([]*podWorker, 0, len(m.workers))
	for _, w := range m.workers {
		workers = append(workers, w)
	}
	m.mu.Unlock()
	for _, w := range workers {
		w.requestStop(grace, false)
	}
	deadline := time.After(grace + 5*time.Second)
	for _, w := range workers {
		select {
		case <-w.containersDone:
		case <-deadline:
			return
		}
	}
}

func finalDelete(client kubernetes.Interface, pod *corev1.Pod, log *slog.Logger) {
	err := client.CoreV1().Pods(pod.Namespace).Delete(context.Background(), pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To(int64(0)),
		Preconditions:      &metav1.Preconditions{UID: ptr.To(pod.UID)},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		log.Warn("final pod delete failed", "pod", pod.Namespace+"/"+pod.Name, "err", err)
	}
}

// podWorker runs one Pod: images, volumes, init containers, containers, probes,
// restarts, status, and termination.
type podWorker struct {
	m              *podManager
	pod            *corev1.Pod
	log            *slog.Logger
	dir            string
	stopOnce       sync.Once
	stop           chan struct{}
	containersDone chan struct{}
	dirty          chan struct{}

	mu      sync.Mutex
	net     *podNet // nil until attached, and on the host's network
	grace   time.Duration
	deleted bool
	state   podState
}

type podState struct {
	startTime    *metav1.Time
	podIP        string
	volumesReady bool
	initialized  bool
	finished     bool
	init         []*containerState
	main         []*containerState
}

type containerState struct {
	name, image, imageID string
	waiting              *corev1.ContainerStateWaiting
	running              *corev1.ContainerStateRunning
	terminated           *corev1.ContainerStateTerminated
	last                 *corev1.ContainerStateTerminated
	restarts             int32
	ready, started       bool
	pid                  int
}

func newPodWorker(m *podManager, pod *corev1.Pod) *podWorker {
	w := &podWorker{
		m: m, pod: pod.DeepCopy(),
		log:            m.log.With("pod", pod.Namespace+"/"+pod.Name),
		dir:            filepath.Join(m.cfg.stateDir, "pods", string(pod.UID)),
		stop:           make(chan struct{}),
		containersDone: make(chan struct{}),
		dirty:          make(chan struct{}, 1),
	}
	for _, c := range pod.Spec.InitContainers {
		w.state.init = append(w.state.init, &containerState{name: c.Name, image: c.Image})
	}
	for _, c := range pod.Spec.Containers {
		w.state.main = append(w.state.main, &containerState{name: c.Name, image: c.Image})
	}
	return w
}

func (w *podWorker) requestStop(grace time.Duration, deleted bool) {
	w.mu.Lock()
	if deleted {
		w.deleted = true
	}
	w.grace = grace
	w.mu.Unlock()
	w.stopOnce.Do(func() { close(w.stop) })
}

func (w *podWorker) stopping() bool {
	select {
	case <-w.stop:
		return true
	default:
		return false
	}
}

// wait sleeps for d unless a stop is requested first; it reports whether to go on.
func (w *podWorker) wait(d time.Duration) bool {
	select {
	case <-w.stop:
		return false
	case <-time.After(d):
		return true
	}
}

func (w *podWorker) update(f func(s *podState)) {
	w.mu.Lock()
	f(&w.state)
	w.mu.Unlock()
	select {
	case w.dirty <- struct{}{}:
	default:
	}
}

func (w *podWorker) run() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	statusDone := make(chan struct{})
	go func() { w.writeStatusLoop(ctx); close(statusDone) }()
	w.update(func(s *podState) { s.startTime = ptr.To(metav1.Now()) })

	w.runPod(ctx)
	close(w.containersDone)
	<-w.stop // a finished Pod stays until it is deleted

	cancel()
	<-statusDone
	w.mu.Lock()
	deleted := w.deleted
	w.mu.Unlock()
	w.writeStatus(context.Background())
	if deleted {
		finalDelete(w.m.client, w.pod, w.log)
	}
	_ = os.RemoveAll(w.dir)
}

func (w *podWorker) runPod(ctx context.Context) {
	defer w.update(func(s *podState) { s.finished = true })
	exes, ok := w.resolveImages()
	if !ok {
		return
	}
	vols, ok := w.buildVolumes(ctx)
	if !ok {
		return
	}
	go w.refreshVolumes(ctx, vols)
	pn, ok := w.attachNetwork()
	if !ok {
		return
	}
	if pn != nil {
		defer w.m.net.detach(pn)
		go w.followPorts(ctx, pn)
	}
	w.update(func(s *podState) { s.volumesReady = true })

	for i := range w.pod.Spec.InitContainers {
		c := &w.pod.Spec.InitContainers[i]
		if !w.runContainer(ctx, c, w.state.init[i], exes[c.Name], vols, true) {
			return
		}
	}
	w.update(func(s *podState) { s.initialized = true })

	var wg sync.WaitGroup
	for i := range w.pod.Spec.Containers {
		c := &w.pod.Spec.Containers[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.runContainer(ctx, c, w.state.main[i], exes[c.Name], vols, false)
		}()
	}
	wg.Wait()
}

func (w *podWorker) allContainers() []*corev1.Container {
	var all []*corev1.Container
	for i := range w.pod.Spec.InitContainers {
		all = append(all, &w.pod.Spec.InitContainers[i])
	}
	for i := range w.pod.Spec.Containers {
		all = append(all, &w.pod.Spec.Containers[i])
	}
	return all
}

func (w *podWorker) stateOf(name string) *containerState {
	for _, s := range append(append([]*containerState{}, w.state.init...), w.state.main...) {
		if s.name == name {
			return s
		}
	}
	return nil
}

// resolveImages maps every image to an executable, waiting like an image pull
// that fails and backs off until the mapping exists.
func (w *podWorker) resolveImages() (map[string]string, bool) {
	for {
		exes := map[string]string{}
		var failed error
		w.update(func(s *podState) {
			for _, c := range w.allContainers() {
				exe, err := w.m.images.resolve(c.Image)
				st := w.stateOf(c.Name)
				if err != nil {
					failed = err
					reason := "ErrImagePull"
					if st.waiting != nil && st.waiting.Reason == "ErrImagePull" {
						reason = "ImagePullBackOff"
					}
					st.waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: err.Error()}
					continue
				}
				exes[c.Name] = exe
				st.imageID = "localnode://" + exe
				st.waiting = &corev1.ContainerStateWaiting{Reason: "PodInitializing"}
			}
		})
		if failed == nil {
			return exes, true
		}
		w.log.Warn("image not mapped", "err", failed)
		if !w.wait(retryInterval) {
			return nil, false
		}
	}
}

func (w *podWorker) buildVolumes(ctx context.Context) (*volumeSet, bool) {
	b := &volumeBuilder{client: w.m.client, pod: w.pod, root: filepath.Join(w.dir, "volumes")}
	for {
		vols, err := b.build(ctx)
		if err == nil {
			return vols, true
		}
		w.log.Warn("volumes not ready", "err", err)
		w.update(func(s *podState) {
			for _, st := range append(append([]*containerState{}, s.init...), s.main...) {
				st.waiting = &corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: err.Error()}
			}
		})
		if !w.wait(retryInterval) {
			return nil, false
		}
	}
}

// refreshVolumes keeps a running Pod's volumes current, as the kubelet does:
// a changed Secret, ConfigMap or downward API field is written within a sync
// period (the kubelet takes up to about a minute; shorter here, so that
// rotation tests are quick), projected service-account tokens are renewed at
// 80% of their lifetime. What cannot be read keeps the files it had.
func (w *podWorker) refreshVolumes(ctx context.Context, vols *volumeSet) {
	b := &volumeBuilder{client: w.m.client, pod: w.pod, root: filepath.Join(w.dir, "volumes")}
	downward := hasDownwardFiles(w.pod)
	period := w.m.cfg.volumeSync
	if period <= 0 {
		period = time.Minute
	}
	for {
		next := time.Now().Add(period)
		if !vols.refreshAt.IsZero() && vols.refreshAt.Before(next) {
			next = vols.refreshAt
		}
		if !w.wait(time.Until(next)) {
			return
		}
		// The downward API's files follow the Pod's labels and annotations;
		// only a Pod that has such files is read again.
		if downward {
			if pod, err := w.m.client.CoreV1().Pods(w.pod.Namespace).Get(ctx, w.pod.Name, metav1.GetOptions{}); err == nil && pod.UID == w.pod.UID {
				b.pod = pod
			}
		}
		b.prev = vols
		fresh, err := b.build(ctx)
		if err != nil {
			w.log.Warn("volume refresh failed; that volume keeps its files", "err", err)
		}
		if fresh != nil {
			vols = fresh
		}
		if !vols.refreshAt.IsZero() && !vols.refreshAt.After(time.Now()) {
			vols.refreshAt = time.Now().Add(retryInterval)
		}
	}
}

// runContainer runs one container until it needs no restart or the Pod stops;
// for an init container it reports whether it completed successfully.
func (w *podWorker) runContainer(ctx context.Context, c *corev1.Container, st *containerState, exe string, vols *volumeSet, isInit bool) bool {
	backoff := time.Second
	policy := w.pod.Spec.RestartPolicy
	if isInit && policy == corev1.RestartPolicyAlways {
		policy = corev1.RestartPolicyOnFailure // init containers run to completion
	}
	for {
		if w.stopping() {
			return false
		}
		started := time.Now()
		code, err := w.runOnce(ctx, c, st, exe, vols)
		if err != nil {
			var cfgErr errConfig
			reason := "RunContainerError"
			if errors.As(err, &cfgErr) {
				reason = "CreateContainerConfigError"
			}
			w.log.Warn("container did not start", "container", c.Name, "err", err)
			w.update(func(*podState) { st.waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: err.Error()} })
			if !w.wait(retryInterval) {
				return false
			}
			continue
		}
		if w.stopping() {
			return false
		}
		restart := policy == corev1.RestartPolicyAlways || (policy == corev1.RestartPolicyOnFailure && code != 0)
		if !restart {
			return code == 0
		}
		if time.Since(started) > time.Minute {
			backoff = time.Second
		}
		w.update(func(*podState) {
			st.restarts++
			st.last, st.terminated = st.terminated, nil
			st.waiting = &corev1.ContainerStateWaiting{
				Reason:  "CrashLoopBackOff",
				Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", backoff, c.Name, w.pod.Name),
			}
		})
		if !w.wait(backoff) {
			return false
		}
		backoff = min(backoff*2, w.m.cfg.maxBackoff)
	}
}

// runOnce starts the process, probes it, and waits for it to exit or be stopped.
func (w *podWorker) runOnce(ctx context.Context, c *corev1.Container, st *containerState, exe string, vols *volumeSet) (int, error) {
	env, vars, err := containerEnv(ctx, w.m.client, w.pod, c, w.podIP(), w.m.cfg.apiHost, w.m.cfg.apiPort)
	if err != nil {
		return 0, err
	}
	spec, err := w.execSpec(c, exe, vars, vols)
	if err != nil {
		return 0, err
	}
	logPath := filepath.Join(w.m.cfg.logDir, "pods", fmt.Sprintf("%s_%s_%s.log", w.pod.Namespace, w.pod.Name, c.Name))
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer logFile.Close()
	var ns *netns
	w.mu.Lock()
	if w.net != nil {
		ns = w.net.ns
	}
	w.mu.Unlock()
	cmd, err := startContainer(spec, env, logFile, ns)
	if err != nil {
		return 0, err
	}
	pid := cmd.Process.Pid
	pidFile := filepath.Join(w.dir, c.Name+".pid")
	_ = os.WriteFile(pidFile, []byte(fmt.Sprintf("%d %s", pid, processStartTime(pid))), 0o644)
	defer os.Remove(pidFile)
	w.log.Info("container started", "container", c.Name, "pid", pid, "argv", spec.Argv)
	w.update(func(*podState) {
		st.waiting, st.terminated = nil, nil
		st.running = &corev1.ContainerStateRunning{StartedAt: metav1.Now()}
		st.pid = pid
		st.started = c.StartupProbe == nil
		st.ready = c.ReadinessProbe == nil
	})

	exited := make(chan *os.ProcessState, 1)
	go func() {
		_ = cmd.Wait()
		exited <- cmd.ProcessState
	}()
	probeCtx, stopProbes := context.WithCancel(ctx)
	kill := make(chan string, 1)
	go w.probe(probeCtx, c, st, pid, kill)

	var ps *os.ProcessState
	select {
	case ps = <-exited:
	case <-w.stop:
		w.mu.Lock()
		grace := w.grace
		w.mu.Unlock()
		ps = terminate(pid, grace, exited)
	case why := <-kill:
		// As the kubelet does, the probe's verdict goes to the log; the
		// terminated state reports how the process ended.
		w.log.Info("killing container to restart it", "container", c.Name, "why", why)
		ps = terminate(pid, time.Duration(ptr.Deref(w.pod.Spec.TerminationGracePeriodSeconds, 30))*time.Second, exited)
	}
	stopProbes()
	// When the main process ends, the rest of its container ends with it.
	_ = syscall.Kill(-pid, syscall.SIGKILL)

	code := exitCode(ps)
	reason := "Completed"
	if code != 0 {
		reason = "Error"
	}
	w.log.Info("container exited", "container", c.Name, "pid", pid, "exitCode", code, "reason", reason)
	w.update(func(*podState) {
		started := st.running.StartedAt
		st.running, st.ready, st.pid = nil, false, 0
		st.terminated = &corev1.ContainerStateTerminated{
			ExitCode: int32(code), Reason: reason, StartedAt: started, FinishedAt: metav1.Now(),
			ContainerID: fmt.Sprintf("localnode://%d", pid),
		}
	})
	return code, nil
}

// terminate sends SIGTERM to the process group, then SIGKILL after the grace period.
func terminate(pid int, grace time.Duration, exited chan *os.ProcessState) *os.ProcessState {
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case ps := <-exited:
		return ps
	case <-time.After(grace):
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	return <-exited
}

func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return 128
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// execSpec resolves the command line and the mounts of a container. The image's
// entrypoint is the mapped executable; a command naming the entrypoint by its
// file name is mapped too, anything else runs as found on the host.
func (w *podWorker) execSpec(c *corev1.Container, exe string, vars map[string]string, vols *volumeSet) (execSpec, error) {
	var argv []string
	for _, a := range c.Command {
		argv = append(argv, expand(a, vars))
	}
	if len(argv) == 0 {
		argv = []string{exe}
	} else if filepath.Base(argv[0]) == filepath.Base(exe) {
		argv[0] = exe
	}
	for _, a := range c.Args {
		argv = append(argv, expand(a, vars))
	}
	spec := execSpec{Argv: argv, WorkDir: c.WorkingDir}
	if sc := c.SecurityContext; sc != nil && ptr.Deref(sc.ReadOnlyRootFilesystem, false) {
		spec.ReadOnlyRootFS = true
	}
	for _, vm := range c.VolumeMounts {
		src, ok := vols.paths[vm.Name]
		if !ok {
			return spec, errConfig{fmt.Sprintf("volumeMount %q names no volume", vm.Name)}
		}
		if vm.SubPath != "" {
			src = filepath.Join(src, expand(vm.SubPath, vars))
		}
		spec.Binds = append(spec.Binds, bind{Source: src, Target: vm.MountPath, ReadOnly: vm.ReadOnly})
	}
	binds, err := nestMountpoints(spec.Binds)
	if err != nil {
		return spec, err
	}
	spec.Binds = binds
	return spec, nil
}

// probe runs the startup, readiness and liveness probes of a running container.
func (w *podWorker) probe(ctx context.Context, c *corev1.Container, st *containerState, pid int, kill chan<- string) {
	if c.StartupProbe != nil {
		p := &prober{probe: c.StartupProbe}
		if !w.probeUntilDecided(ctx, p, c, pid) {
			return
		}
		if !p.passing {
			select {
			case kill <- "StartupProbeFailed":
			default:
			}
			return
		}
	}
	w.update(func(*podState) { st.started = true })
	var readiness, liveness *prober
	if c.ReadinessProbe != nil {
		readiness = &prober{probe: c.ReadinessProbe}
	}
	if c.LivenessProbe != nil {
		liveness = &prober{probe: c.LivenessProbe}
	}
	run := func(p *prober, onResult func(*prober)) {
		if p == nil {
			return
		}
		if !sleepCtx(ctx, time.Duration(p.probe.InitialDelaySeconds)*time.Second) {
			return
		}
		for {
			p.observe(w.probeOnce(ctx, p.probe, c, pid))
			if ctx.Err() != nil {
				return
			}
			onResult(p)
			if !sleepCtx(ctx, period(p.probe)) {
				return
			}
		}
	}
	go run(readiness, func(p *prober) {
		ready := p.passing
		w.mu.Lock()
		changed := st.ready != ready
		w.mu.Unlock()
		if changed {
			if ready {
				// Ready means reachable: what it listens on is forwarded first.
				w.followNow()
			}
			w.update(func(*podState) { st.ready = ready })
		}
	})
	run(liveness, func(p *prober) {
		if p.failed() {
			select {
			case kill <- "LivenessProbeFailed":
			default:
			}
		}
	})
}

// probeUntilDecided runs a startup probe until it passes or fails for good;
// false means the container is gone and probing stopped.
func (w *podWorker) probeUntilDecided(ctx context.Context, p *prober, c *corev1.Container, pid int) bool {
	if !sleepCtx(ctx, time.Duration(p.probe.InitialDelaySeconds)*time.Second) {
		return false
	}
	for {
		p.observe(w.probeOnce(ctx, p.probe, c, pid))
		if ctx.Err() != nil {
			return false
		}
		if p.passing || p.failed() {
			return true
		}
		if !sleepCtx(ctx, period(p.probe)) {
			return false
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// hasDownwardFiles says whether a volume of pod holds downward API files.
func hasDownwardFiles(pod *corev1.Pod) bool {
	for _, v := range pod.Spec.Volumes {
		if v.DownwardAPI != nil {
			return true
		}
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				if src.DownwardAPI != nil {
					return true
				}
			}
		}
	}
	return false
}
