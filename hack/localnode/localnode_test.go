package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"POD": "p-1", "NS": "default"}
	cases := map[string]string{
		"hello $(POD)":       "hello p-1",
		"$(POD).$(NS)":       "p-1.default",
		"$(MISSING) stays":   "$(MISSING) stays",
		"$$(POD) is escaped": "$(POD) is escaped",
		"cost $$5":           "cost $5",
		"no refs":            "no refs",
	}
	for in, want := range cases {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRepository(t *testing.T) {
	cases := map[string]string{
		"logsub":                            "logsub",
		"logsub:0.1.0":                      "logsub",
		"logsub-test/probe:1":               "logsub-test/probe",
		"registry:5000/team/app:2.0":        "registry:5000/team/app",
		"registry:5000/team/app":            "registry:5000/team/app",
		"app@sha256:abcd":                   "app",
		"registry:5000/app:1.0@sha256:abcd": "registry:5000/app",
	}
	for in, want := range cases {
		if got := repository(in); got != want {
			t.Errorf("repository(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestImageMapResolves(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "logsub")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "images.json")
	if err := os.WriteFile(file, []byte(`{"images": {"logsub": "`+exe+`"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	m := imageMap{path: file}
	if got, err := m.resolve("logsub:9.9.9"); err != nil || got != exe {
		t.Errorf("resolve(logsub:9.9.9) = %q, %v", got, err)
	}
	_, err := m.resolve("other:1")
	var notMapped errImageNotMapped
	if !errors.As(err, &notMapped) {
		t.Errorf("an unmapped image gives errImageNotMapped, got %v", err)
	}
}

func TestSeekToLastLines(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("one\ntwo\nthree\n"); err != nil {
		t.Fatal(err)
	}
	cases := map[int]string{0: "", 1: "three\n", 2: "two\nthree\n", 3: "one\ntwo\nthree\n", 10: "one\ntwo\nthree\n"}
	for n, want := range cases {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		if err := seekToLastLines(f, n); err != nil {
			t.Fatal(err)
		}
		rest, _ := io.ReadAll(f)
		if string(rest) != want {
			t.Errorf("last %d lines = %q, want %q", n, rest, want)
		}
	}
}

func TestProberThresholds(t *testing.T) {
	p := &prober{probe: &corev1.Probe{SuccessThreshold: 2, FailureThreshold: 3}}
	fail := errors.New("down")
	steps := []struct {
		err             error
		passing, failed bool
	}{
		{nil, false, false}, // one success of two
		{nil, true, false},
		{fail, true, false}, // one failure of three keeps it passing
		{fail, true, false},
		{fail, false, true},
		{nil, false, false}, // successes count again from zero
		{nil, true, false},
	}
	for i, s := range steps {
		p.observe(s.err)
		if p.passing != s.passing || p.failed() != s.failed {
			t.Fatalf("step %d: passing=%v failed=%v, want %v %v", i, p.passing, p.failed(), s.passing, s.failed)
		}
	}
}

func TestResolvePort(t *testing.T) {
	c := &corev1.Container{Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9090}}}
	if p, err := resolvePort(intstr.FromInt32(8080), c); err != nil || p != 8080 {
		t.Errorf("numeric port: %d %v", p, err)
	}
	if p, err := resolvePort(intstr.FromString("metrics"), c); err != nil || p != 9090 {
		t.Errorf("named port: %d %v", p, err)
	}
	if _, err := resolvePort(intstr.FromString("nope"), c); err == nil {
		t.Error("an unknown port name is an error")
	}
}

func TestPodField(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u-1", Labels: map[string]string{"app": "x"}},
		Spec:       corev1.PodSpec{NodeName: "n", ServiceAccountName: "sa"},
	}
	cases := map[string]string{
		"metadata.name": "p", "metadata.namespace": "ns", "metadata.uid": "u-1",
		"spec.nodeName": "n", "spec.serviceAccountName": "sa", "status.podIP": "127.244.0.7", "status.hostIP": "127.0.0.1",
		"metadata.labels['app']": "x", "metadata.labels": `app="x"`,
	}
	for path, want := range cases {
		if got, err := podField(pod, "127.244.0.7", path); err != nil || got != want {
			t.Errorf("podField(%q) = %q, %v; want %q", path, got, err, want)
		}
	}
	if _, err := podField(pod, "127.244.0.7", "spec.nope"); err == nil {
		t.Error("an unknown field path is an error")
	}
}

func TestKeyFiles(t *testing.T) {
	data := map[string][]byte{"a": []byte("1"), "b": []byte("2")}
	out := map[string]file{}
	if err := keyFiles("configmap c", data, nil, nil, 0o644, out); err != nil || len(out) != 2 {
		t.Fatalf("all keys: %v %v", out, err)
	}
	out = map[string]file{}
	mode := int32(0o600)
	items := []corev1.KeyToPath{{Key: "a", Path: "dir/renamed", Mode: &mode}}
	if err := keyFiles("configmap c", data, items, nil, 0o644, out); err != nil {
		t.Fatal(err)
	}
	if f, ok := out["dir/renamed"]; !ok || string(f.data) != "1" || f.mode != 0o600 || len(out) != 1 {
		t.Errorf("items: %v", out)
	}
	missing := []corev1.KeyToPath{{Key: "zz", Path: "zz"}}
	if err := keyFiles("configmap c", data, missing, nil, 0o644, map[string]file{}); err == nil {
		t.Error("a missing key is an error")
	}
	optional := true
	if err := keyFiles("configmap c", data, missing, &optional, 0o644, map[string]file{}); err != nil {
		t.Errorf("a missing optional key is fine: %v", err)
	}
}

func TestPodPhase(t *testing.T) {
	running := &corev1.ContainerStateRunning{}
	ok := &corev1.ContainerStateTerminated{ExitCode: 0}
	bad := &corev1.ContainerStateTerminated{ExitCode: 2}
	cases := []struct {
		name  string
		state podState
		want  corev1.PodPhase
	}{
		{"not started", podState{main: []*containerState{{waiting: &corev1.ContainerStateWaiting{}}}}, corev1.PodPending},
		{"no containers yet", podState{}, corev1.PodPending},
		{"stopped before starting", podState{finished: true, main: []*containerState{{}}}, corev1.PodPending},
		{"running", podState{initialized: true, main: []*containerState{{running: running}}}, corev1.PodRunning},
		{"restarting", podState{initialized: true, main: []*containerState{{restarts: 2}}}, corev1.PodRunning},
		{"succeeded", podState{initialized: true, finished: true, main: []*containerState{{terminated: ok}}}, corev1.PodSucceeded},
		{"failed", podState{initialized: true, finished: true, main: []*containerState{{terminated: ok}, {terminated: bad}}}, corev1.PodFailed},
		{"one done, one running", podState{initialized: true, main: []*containerState{{terminated: ok}, {running: running}}}, corev1.PodRunning},
	}
	for _, c := range cases {
		w := &podWorker{pod: &corev1.Pod{}, state: c.state}
		if got := w.podStatus(corev1.PodStatus{}).Phase; got != c.want {
			t.Errorf("%s: phase %s, want %s", c.name, got, c.want)
		}
	}
}

func TestMergePodConditionsKeepsTransitionTimes(t *testing.T) {
	then := metav1.NewTime(metav1.Now().Add(-3600e9))
	old := []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: then},
		{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: then},
		{Type: corev1.ContainersReady, Status: corev1.ConditionFalse, LastTransitionTime: then},
	}
	got := mergePodConditions(old, []corev1.PodCondition{
		{Type: corev1.PodReady, Status: corev1.ConditionTrue},
		{Type: corev1.ContainersReady, Status: corev1.ConditionTrue},
	})
	byType := map[corev1.PodConditionType]corev1.PodCondition{}
	for _, c := range got {
		byType[c.Type] = c
	}
	if len(got) != 3 || byType[corev1.PodScheduled].LastTransitionTime != then {
		t.Errorf("conditions owned by others are kept: %v", got)
	}
	if byType[corev1.PodReady].LastTransitionTime != then {
		t.Error("an unchanged condition keeps its transition time")
	}
	if byType[corev1.ContainersReady].LastTransitionTime == then {
		t.Error("a changed condition gets a new transition time")
	}
}

func TestRegisterRetriesAConflictingStatusWrite(t *testing.T) {
	client := fake.NewSimpleClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"}})
	conflicts := 0
	client.PrependReactor("update", "nodes", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if action.GetSubresource() != "status" || conflicts == 2 {
			return false, nil, nil
		}
		conflicts++
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "nodes"}, "n", errors.New("the object has been modified"))
	})
	agent := &nodeAgent{client: client, name: "n", log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := agent.register(context.Background()); err != nil {
		t.Fatalf("register after %d conflicts: %v", conflicts, err)
	}
	node, err := client.CoreV1().Nodes().Get(context.Background(), "n", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if conflicts != 2 || len(node.Status.Conditions) == 0 {
		t.Fatalf("conflicts = %d, conditions = %v", conflicts, node.Status.Conditions)
	}
}
