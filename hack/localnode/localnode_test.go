package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
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

// A rebuild writes what a Secret holds now and keeps a service-account
// token that is not yet due, so that keeping Secrets current does not ask
// for a token every sync.
func TestRebuiltVolumesFollowSecretsAndKeepTokensUntilDue(t *testing.T) {
	ctx := context.Background()
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "creds"}, Data: map[string][]byte{"password": []byte("first")}}
	client := fake.NewSimpleClientset(secret)
	issued := 0
	client.PrependReactor("create", "serviceaccounts", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if action.GetSubresource() != "token" {
			return false, nil, nil
		}
		issued++
		return true, &authenticationv1.TokenRequest{Status: authenticationv1.TokenRequestStatus{
			Token:               fmt.Sprintf("token-%d", issued),
			ExpirationTimestamp: metav1.NewTime(time.Now().Add(time.Hour)),
		}}, nil
	})
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"}, Spec: corev1.PodSpec{Volumes: []corev1.Volume{
		{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "creds"}}},
		{Name: "token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}},
		}}}},
	}}}
	root := t.TempDir()
	b := &volumeBuilder{client: client, pod: pod, root: root}
	read := func(rel string) string {
		data, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	first, err := b.build(ctx)
	if err != nil {
		t.Fatal(err)
	}
	secret.Data["password"] = []byte("second")
	if _, err := client.CoreV1().Secrets("ns").Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	b.prev = first
	second, err := b.build(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := read("creds/password"); got != "second" {
		t.Fatalf("password = %q after the Secret changed", got)
	}
	if got := read("token/token"); got != "token-1" || issued != 1 || !second.refreshAt.Equal(first.refreshAt) {
		t.Fatalf("token %q, %d issued, renewal %v then %v: a token not yet due was asked for again", got, issued, first.refreshAt, second.refreshAt)
	}
	second.tokens["token/token"] = issuedToken{[]byte("token-1"), time.Now().Add(-time.Second)}
	b.prev = second
	if _, err := b.build(ctx); err != nil {
		t.Fatal(err)
	}
	if got := read("token/token"); got != "token-2" {
		t.Fatalf("token %q once due", got)
	}
}

// A Secret mounted beneath a ConfigMap's path gets its mount point in the
// ConfigMap's directory, made before anything is mounted (the ConfigMap is
// mounted read-only), and is mounted after it.
func TestNestedMountsGetTheirPointsInTheOuterVolume(t *testing.T) {
	root := t.TempDir()
	dir := func(name string) string {
		d := filepath.Join(root, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	config, ca, key, other := dir("config"), dir("ca"), dir("key"), dir("other")
	binds, err := nestMountpoints([]bind{
		{Source: ca, Target: "/etc/logsub/secrets/search-ca", ReadOnly: true},
		{Source: config, Target: "/etc/logsub", ReadOnly: true},
		{Source: key, Target: "/etc/logsub/secrets/key/"},
		{Source: other, Target: "/etc/logsubx"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if binds[0].Target != "/etc/logsub" {
		t.Fatalf("the outer volume is not mounted first: %v", binds)
	}
	for _, point := range []string{"secrets/search-ca", "secrets/key"} {
		if info, err := os.Stat(filepath.Join(config, point)); err != nil || !info.IsDir() {
			t.Fatalf("no mount point %s in the ConfigMap's directory: %v", point, err)
		}
	}
	if entries, _ := os.ReadDir(other); len(entries) != 0 {
		t.Fatalf("a volume at a path that only shares a prefix got %v", entries)
	}
}

// On a rebuild, a volume that cannot be read (its Secret deleted) keeps its
// files and the volumes after it still follow their objects; a key taken
// out of a Secret takes its file with it, and a key path that turns from a
// directory into a file is written.
func TestRebuiltVolumesStandAlone(t *testing.T) {
	ctx := context.Background()
	creds := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "creds"}, Data: map[string][]byte{"password": []byte("p")}}
	ca := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "ca"}, Data: map[string][]byte{"ca.crt": []byte("old"), "extra": []byte("x")}}
	client := fake.NewSimpleClientset(creds, ca)
	items := []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}, {Key: "extra", Path: "d/extra"}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"}, Spec: corev1.PodSpec{Volumes: []corev1.Volume{
		{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "creds"}}},
		{Name: "ca", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "ca", Items: items}}},
	}}}
	root := t.TempDir()
	b := &volumeBuilder{client: client, pod: pod, root: root}
	first, err := b.build(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.CoreV1().Secrets("ns").Delete(ctx, "creds", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	ca.Data = map[string][]byte{"ca.crt": []byte("new"), "extra": []byte("y")}
	if _, err := client.CoreV1().Secrets("ns").Update(ctx, ca, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod.Spec.Volumes[1].Secret.Items = []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}, {Key: "extra", Path: "d"}}
	b.prev = first
	second, err := b.build(ctx)
	if err == nil || second == nil {
		t.Fatalf("a deleted Secret is an error, with the rest built: %v, %v", err, second)
	}
	read := func(rel string) string {
		data, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(data)
	}
	if got := read("creds/password"); got != "p" {
		t.Fatalf("the unreadable volume's file: %q", got)
	}
	if got, d := read("ca/ca.crt"), read("ca/d"); got != "new" || d != "y" {
		t.Fatalf("the later volume: ca.crt %q, d %q", got, d)
	}
	ca.Data = map[string][]byte{"ca.crt": []byte("new")}
	pod.Spec.Volumes[1].Secret.Items = nil
	if _, err := client.CoreV1().Secrets("ns").Update(ctx, ca, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	b.prev = second
	if _, err := b.build(ctx); err == nil {
		t.Fatal("creds is still gone")
	}
	if _, err := os.Stat(filepath.Join(root, "ca/d")); !os.IsNotExist(err) {
		t.Fatalf("a key taken out keeps its file: %v", err)
	}
}
