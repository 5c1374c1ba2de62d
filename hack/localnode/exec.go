package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

const execHelperArg = "__exec"

// execSpec is what the helper needs to enter the container's view and exec.
type execSpec struct {
	Binds          []bind   `json:"binds"`
	ReadOnlyRootFS bool     `json:"readOnlyRootFS"`
	WorkDir        string   `json:"workDir"`
	Argv           []string `json:"argv"`
	// NetNS: the Pod's network namespace is the helper's file descriptor 3.
	NetNS bool `json:"netNS"`
}

const netnsFD = 3

type bind struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly"`
}

// startContainer starts the helper in a new mount namespace and process group;
// the helper enters the Pod's network namespace (ns, unless nil: the host's),
// mounts the volumes, then execs the container's command in place.
func startContainer(spec execSpec, env []string, logFile *os.File, ns *netns) (*exec.Cmd, error) {
	spec.NetNS = ns != nil
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, execHelperArg, string(raw))
	cmd.Env = env
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:      true,
		Unshareflags: syscall.CLONE_NEWNS,
	}
	if ns != nil {
		err = ns.use(func(f *os.File) error {
			cmd.ExtraFiles = []*os.File{f}
			return cmd.Start()
		})
	} else {
		err = cmd.Start()
	}
	if err != nil {
		return nil, err
	}
	return cmd, nil
}

// runExecHelper never returns on success: it becomes the container's process.
func runExecHelper(args []string) {
	fail := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "localnode: "+format+"\n", a...)
		os.Exit(128)
	}
	if len(args) != 1 {
		fail("exec helper: want one argument")
	}
	var spec execSpec
	if err := json.Unmarshal([]byte(args[0]), &spec); err != nil {
		fail("exec helper: %v", err)
	}
	if spec.NetNS {
		// The namespace belongs to the thread: exec runs from this one.
		runtime.LockOSThread()
		if err := unix.Setns(netnsFD, unix.CLONE_NEWNET); err != nil {
			fail("enter the Pod's network namespace: %v", err)
		}
		_ = unix.Close(netnsFD)
	}
	// Mounts made here must not leak back into the host's namespace.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		fail("make mounts private: %v", err)
	}
	for _, b := range spec.Binds {
		if err := bindMount(b); err != nil {
			fail("mount %s at %s: %v", b.Source, b.Target, err)
		}
	}
	if spec.ReadOnlyRootFS {
		if err := syscall.Mount("", "/", "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
			fail("read-only root: %v", err)
		}
	}
	if spec.WorkDir != "" {
		if err := os.Chdir(spec.WorkDir); err != nil {
			fail("working directory %s: %v", spec.WorkDir, err)
		}
	}
	argv0, err := lookPath(spec.Argv[0])
	if err != nil {
		fail("%v", err)
	}
	err = syscall.Exec(argv0, spec.Argv, os.Environ())
	fail("exec %s: %v", argv0, err)
}

func bindMount(b bind) error {
	info, err := os.Stat(b.Source)
	if err != nil {
		return err
	}
	// The mount point is made on the host file system; it stays an empty
	// directory or file there, and only this namespace sees the mount.
	if info.IsDir() {
		if err := os.MkdirAll(b.Target, 0o755); err != nil {
			return err
		}
	} else {
		if err := os.MkdirAll(filepath.Dir(b.Target), 0o755); err != nil {
			return err
		}
		if _, err := os.Stat(b.Target); os.IsNotExist(err) {
			if err := os.WriteFile(b.Target, nil, 0o644); err != nil {
				return err
			}
		}
	}
	if err := syscall.Mount(b.Source, b.Target, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return err
	}
	if b.ReadOnly {
		return syscall.Mount("", b.Target, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, "")
	}
	return nil
}

// nestMountpoints orders binds so that a volume is mounted before the ones
// beneath its path, and makes their mount points in its own directory first,
// as the kubelet does: the outer volume is often mounted read-only (a
// ConfigMap at /etc/app, a Secret at /etc/app/secrets/x), and no mount point
// can be made inside it once it is.
func nestMountpoints(binds []bind) ([]bind, error) {
	ordered := slices.Clone(binds)
	slices.SortStableFunc(ordered, func(a, b bind) int {
		return strings.Count(filepath.Clean(a.Target), "/") - strings.Count(filepath.Clean(b.Target), "/")
	})
	for i, inner := range ordered {
		for _, outer := range ordered[:i] {
			rel, err := filepath.Rel(filepath.Clean(outer.Target), filepath.Clean(inner.Target))
			if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
				continue
			}
			if info, err := os.Stat(outer.Source); err != nil || !info.IsDir() {
				continue
			}
			point := filepath.Join(outer.Source, rel)
			if info, err := os.Stat(inner.Source); err == nil && !info.IsDir() {
				if err := os.MkdirAll(filepath.Dir(point), 0o755); err != nil {
					return nil, err
				}
				if _, err := os.Stat(point); os.IsNotExist(err) {
					if err := os.WriteFile(point, nil, 0o644); err != nil {
						return nil, err
					}
				}
				continue
			}
			if err := os.MkdirAll(point, 0o755); err != nil {
				return nil, err
			}
		}
	}
	return ordered, nil
}

// lookPath finds argv[0] on the container's PATH when it is not a path.
func lookPath(name string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		p := filepath.Join(dir, name)
		if info, err := os.Stat(p); err == nil && !info.IsDir() && info.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("executable %q not found in PATH", name)
}
