package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// volumeSet is a Pod's volumes materialized on the host, by volume name.
type volumeSet struct {
	paths map[string]string
	// Earliest time a projected service-account token should be refreshed (80% of
	// its lifetime, as the kubelet does); zero when the Pod has none.
	refreshAt time.Time
	// The tokens written, by volume and path, so that a rebuild for changed
	// Secrets or ConfigMaps keeps a token until it is due.
	tokens map[string]issuedToken
	// The files written, by volume: a rebuild removes those no longer there
	// (a key taken out of a Secret) and nothing else (nested mount points).
	written map[string]map[string]file
}

type issuedToken struct {
	data    []byte
	renewAt time.Time
}

type volumeBuilder struct {
	client kubernetes.Interface
	pod    *corev1.Pod
	root   string // <state>/pods/<uid>/volumes
	// The volumes as last built, when rebuilding them; nil at first.
	prev *volumeSet
}

// errConfig is a Pod configuration problem (missing ConfigMap, Secret or key),
// reported as CreateContainerConfigError and retried.
type errConfig struct{ msg string }

func (e errConfig) Error() string { return e.msg }

// build writes the Pod's volumes. At first any volume that cannot be made
// fails the whole (the containers wait); a rebuild goes on past one, keeping
// its files and tokens as they were, as the kubelet refreshes each on its own,
// and returns the first error with the rest brought up to date.
func (b *volumeBuilder) build(ctx context.Context) (*volumeSet, error) {
	set := &volumeSet{paths: map[string]string{}, tokens: map[string]issuedToken{}, written: map[string]map[string]file{}}
	var failed error
	for _, v := range b.pod.Spec.Volumes {
		err := b.buildVolume(ctx, v, set)
		if err == nil {
			continue
		}
		if b.prev == nil {
			return nil, err
		}
		b.keep(v.Name, set)
		if failed == nil {
			failed = err
		}
	}
	return set, failed
}

// keep carries a volume's previous files and tokens over into set.
func (b *volumeBuilder) keep(volume string, set *volumeSet) {
	set.written[volume] = b.prev.written[volume]
	for key, t := range b.prev.tokens {
		if strings.HasPrefix(key, volume+"/") {
			set.tokens[key] = t
			if set.refreshAt.IsZero() || t.renewAt.Before(set.refreshAt) {
				set.refreshAt = t.renewAt
			}
		}
	}
}

func (b *volumeBuilder) buildVolume(ctx context.Context, v corev1.Volume, set *volumeSet) error {
	if v.HostPath != nil {
		set.paths[v.Name] = v.HostPath.Path
		return nil
	}
	dir := filepath.Join(b.root, v.Name)
	set.paths[v.Name] = dir
	if v.EmptyDir != nil {
		return os.MkdirAll(dir, 0o777)
	}
	files, refresh, err := b.files(ctx, v, set)
	if err != nil {
		return fmt.Errorf("volume %q: %w", v.Name, err)
	}
	if files == nil {
		return errConfig{fmt.Sprintf("volume %q: this volume type is not supported by the local node", v.Name)}
	}
	var before map[string]file
	if b.prev != nil {
		before = b.prev.written[v.Name]
	}
	if err := writeFiles(dir, files, before); err != nil {
		return fmt.Errorf("volume %q: %w", v.Name, err)
	}
	set.written[v.Name] = files
	if !refresh.IsZero() && (set.refreshAt.IsZero() || refresh.Before(set.refreshAt)) {
		set.refreshAt = refresh
	}
	return nil
}

type file struct {
	data []byte
	mode os.FileMode
}

// files returns a volume's files by relative path; nil for unsupported types.
func (b *volumeBuilder) files(ctx context.Context, v corev1.Volume, set *volumeSet) (map[string]file, time.Time, error) {
	files := map[string]file{}
	var refresh time.Time
	switch {
	case v.ConfigMap != nil:
		err := b.sourceFiles(ctx, configMapSource(v.ConfigMap.Name), v.ConfigMap.Items, v.ConfigMap.Optional, mode(v.ConfigMap.DefaultMode), files)
		return files, refresh, err
	case v.Secret != nil:
		err := b.sourceFiles(ctx, secretSource(v.Secret.SecretName), v.Secret.Items, v.Secret.Optional, mode(v.Secret.DefaultMode), files)
		return files, refresh, err
	case v.DownwardAPI != nil:
		err := b.downwardFiles(v.DownwardAPI.Items, mode(v.DownwardAPI.DefaultMode), files)
		return files, refresh, err
	case v.Projected != nil:
		def := mode(v.Projected.DefaultMode)
		for _, src := range v.Projected.Sources {
			var err error
			switch {
			case src.ConfigMap != nil:
				err = b.sourceFiles(ctx, configMapSource(src.ConfigMap.Name), src.ConfigMap.Items, src.ConfigMap.Optional, def, files)
			case src.Secret != nil:
				err = b.sourceFiles(ctx, secretSource(src.Secret.Name), src.Secret.Items, src.Secret.Optional, def, files)
			case src.DownwardAPI != nil:
				err = b.downwardFiles(src.DownwardAPI.Items, def, files)
			case src.ServiceAccountToken != nil:
				var at time.Time
				at, err = b.tokenFile(ctx, v.Name, src.ServiceAccountToken, def, files, set)
				if refresh.IsZero() || at.Before(refresh) {
					refresh = at
				}
			default:
				err = errConfig{"unsupported projected volume source"}
			}
			if err != nil {
				return nil, refresh, err
			}
		}
		return files, refresh, nil
	}
	return nil, refresh, nil
}

func mode(m *int32) os.FileMode {
	if m == nil {
		return 0o644
	}
	return os.FileMode(*m)
}

func itemMode(m *int32, def os.FileMode) os.FileMode {
	if m == nil {
		return def
	}
	return os.FileMode(*m)
}

// source is a ConfigMap or a Secret a Pod reads keys from.
type source struct{ kind, name string }

func configMapSource(name string) source { return source{"configmap", name} }
func secretSource(name string) source    { return source{"secret", name} }

func (s source) String() string { return fmt.Sprintf("%s %q", s.kind, s.name) }

// sourceData returns the object's data by key; found is false when it does not exist.
func sourceData(ctx context.Context, client kubernetes.Interface, ns string, src source) (map[string][]byte, bool, error) {
	data := map[string][]byte{}
	if src.kind == "configmap" {
		cm, err := client.CoreV1().ConfigMaps(ns).Get(ctx, src.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		for k, v := range cm.Data {
			data[k] = []byte(v)
		}
		for k, v := range cm.BinaryData {
			data[k] = v
		}
		return data, true, nil
	}
	secret, err := client.CoreV1().Secrets(ns).Get(ctx, src.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	for k, v := range secret.Data {
		data[k] = v
	}
	return data, true, nil
}

func (b *volumeBuilder) sourceFiles(ctx context.Context, src source, items []corev1.KeyToPath, optional *bool, def os.FileMode, out map[string]file) error {
	data, found, err := sourceData(ctx, b.client, b.pod.Namespace, src)
	if err != nil {
		return err
	}
	if !found {
		if ptr.Deref(optional, false) {
			return nil
		}
		return errConfig{src.String() + " not found"}
	}
	return keyFiles(src.String(), data, items, optional, def, out)
}

func keyFiles(what string, data map[string][]byte, items []corev1.KeyToPath, optional *bool, def os.FileMode, out map[string]file) error {
	if len(items) == 0 {
		for k, v := range data {
			out[k] = file{v, def}
		}
		return nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if ptr.Deref(optional, false) {
				continue
			}
			return errConfig{fmt.Sprintf("%s has no key %q", what, it.Key)}
		}
		out[it.Path] = file{v, itemMode(it.Mode, def)}
	}
	return nil
}

func (b *volumeBuilder) downwardFiles(items []corev1.DownwardAPIVolumeFile, def os.FileMode, out map[string]file) error {
	for _, it := range items {
		var value string
		var err error
		switch {
		case it.FieldRef != nil:
			// The API server allows no Pod address in a volume's files.
			value, err = podField(b.pod, "", it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			value, err = resourceField(b.pod, it.ResourceFieldRef.ContainerName, it.ResourceFieldRef)
		}
		if err != nil {
			return err
		}
		out[it.Path] = file{[]byte(value), itemMode(it.Mode, def)}
	}
	return nil
}

func (b *volumeBuilder) tokenFile(ctx context.Context, volume string, src *corev1.ServiceAccountTokenProjection, def os.FileMode, out map[string]file, set *volumeSet) (time.Time, error) {
	key := volume + "/" + src.Path
	if b.prev != nil {
		if t, ok := b.prev.tokens[key]; ok && time.Now().Before(t.renewAt) {
			out[src.Path] = file{t.data, def}
			set.tokens[key] = t
			return t.renewAt, nil
		}
	}
	expiry := ptr.Deref(src.ExpirationSeconds, 3600)
	req := &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: ptr.To(expiry),
			BoundObjectRef: &authenticationv1.BoundObjectReference{
				Kind: "Pod", APIVersion: "v1", Name: b.pod.Name, UID: b.pod.UID,
			},
		},
	}
	if src.Audience != "" {
		req.Spec.Audiences = []string{src.Audience}
	}
	sa := b.pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tok, err := b.client.CoreV1().ServiceAccounts(b.pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return time.Time{}, fmt.Errorf("token for service account %q: %w", sa, err)
	}
	out[src.Path] = file{[]byte(tok.Status.Token), def}
	lifetime := tok.Status.ExpirationTimestamp.Sub(time.Now())
	renewAt := time.Now().Add(lifetime * 8 / 10)
	set.tokens[key] = issuedToken{[]byte(tok.Status.Token), renewAt}
	return renewAt, nil
}

// writeFiles replaces dir's content with files, atomically per file; a file
// that already holds its content is left alone. Of what was written before
// (before), what files no longer holds is removed, and only that: the
// directory may also hold mount points for volumes mounted beneath it.
func writeFiles(dir string, files, before map[string]file) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for rel := range before {
		if _, still := files[rel]; still {
			continue
		}
		if err := os.Remove(filepath.Join(dir, rel)); err != nil && !os.IsNotExist(err) {
			return err
		}
		// Its directories go too once empty (a key path that is now a file).
		for parent := filepath.Dir(rel); parent != "."; parent = filepath.Dir(parent) {
			if os.Remove(filepath.Join(dir, parent)) != nil {
				break
			}
		}
	}
	for rel, f := range files {
		if strings.Contains(rel, "..") || filepath.IsAbs(rel) {
			return errConfig{fmt.Sprintf("invalid file path %q", rel)}
		}
		path := filepath.Join(dir, rel)
		if unchanged(path, f) {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		tmp := path + ".tmp" + strconv.Itoa(os.Getpid())
		if err := os.WriteFile(tmp, f.data, f.mode.Perm()); err != nil {
			return err
		}
		if err := os.Chmod(tmp, f.mode.Perm()); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	}
	return nil
}

func unchanged(path string, f file) bool {
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != f.mode.Perm() {
		return false
	}
	data, err := os.ReadFile(path)
	return err == nil && bytes.Equal(data, f.data)
}
