// Command image writes logsub's container image as an OCI archive (an OCI image
// layout in a tar file) without a container engine or a registry: one layer on
// an empty base holding the static binary, the CA bundle and the passwd/group
// files of the non-root user. The Dockerfile at the repository root builds the
// same filesystem and config with an engine; the image test compares the two.
//
// The output is reproducible: every timestamp is SOURCE_DATE_EPOCH (the commit
// time), so the same binary always gives the same digest.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The runtime user. 65532 is the conventional "nonroot" id of minimal images,
// and the chart's securityContext sets runAsNonRoot, which needs a numeric user.
const user = "65532:65532"

// file is one entry of the image's only layer.
type file struct {
	path string // inside the image, without the leading slash
	mode int64
	body []byte
}

func main() {
	binary := flag.String("binary", "", "the static logsub binary")
	caBundle := flag.String("ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "PEM bundle installed as /etc/ssl/certs/ca-certificates.crt")
	rootfs := flag.String("rootfs", "", "directory whose files are copied into the image as they are (passwd, group)")
	out := flag.String("out", "", "the OCI archive to write")
	version := flag.String("version", "dev", "image version, also the ref name in the archive")
	revision := flag.String("revision", "", "source revision (commit)")
	push := flag.String("push", "", "also push the image to this reference (registry/repository:tag), with the credentials of the Docker config")
	flag.Parse()
	if *binary == "" || *out == "" || *rootfs == "" {
		flag.Usage()
		os.Exit(2)
	}
	created := sourceDate()
	img, err := build(*binary, *caBundle, *rootfs, *out, *version, *revision, created)
	if err != nil {
		log.Fatalf("image: %v", err)
	}
	if *push != "" {
		if err := pushTo(*push, img); err != nil {
			log.Fatalf("image: push %s: %v", *push, err)
		}
	}
}

// pushTo pushes through the registry API (plain HTTP for loopback registries,
// as go-containerregistry decides), authenticated as `docker login` left it.
func pushTo(reference string, img v1.Image) error {
	ref, err := name.ParseReference(reference)
	if err != nil {
		return err
	}
	if err := remote.Write(ref, img, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "pushed %s@%s\n", ref.Context().Name(), digest)
	return nil
}

func sourceDate() time.Time {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		secs, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			log.Fatalf("image: SOURCE_DATE_EPOCH %q: %v", s, err)
		}
		return time.Unix(secs, 0).UTC()
	}
	return time.Unix(0, 0).UTC()
}

func build(binary, caBundle, rootfs, out, version, revision string, created time.Time) (v1.Image, error) {
	files, err := layerFiles(binary, caBundle, rootfs)
	if err != nil {
		return nil, err
	}
	layerTar, err := tarOf(files, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: "hack/image: logsub, CA bundle, passwd and group",
			Comment:   "the same filesystem as the Dockerfile's final stage",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture = "amd64"
	cfg.OS = "linux"
	cfg.Created = v1.Time{Time: created}
	labels := map[string]string{
		"org.opencontainers.image.title":       "logsub",
		"org.opencontainers.image.description": "Kubernetes operator that streams CloudWatch Logs through Kinesis into Elasticsearch/OpenSearch or S3",
		"org.opencontainers.image.licenses":    "Apache-2.0",
		"org.opencontainers.image.version":     version,
		"org.opencontainers.image.created":     created.Format(time.RFC3339),
	}
	if revision != "" {
		labels["org.opencontainers.image.revision"] = revision
	}
	cfg.Config = v1.Config{
		User:       user,
		Entrypoint: []string{"/logsub"},
		Env:        []string{"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"},
		WorkingDir: "/",
		Labels:     labels,
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	img = mutate.Annotations(img, labels).(v1.Image)

	dir, err := os.MkdirTemp(filepath.Dir(out), ".oci-layout-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return nil, fmt.Errorf("layout: %w", err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": version,
	})); err != nil {
		return nil, fmt.Errorf("layout: %w", err)
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, err
	}
	if err := archive(dir, out, created); err != nil {
		return nil, err
	}
	fmt.Printf("%s %s\n", out, digest)
	return img, nil
}

func layerFiles(binary, caBundle, rootfs string) ([]file, error) {
	bin, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(caBundle)
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %w", err)
	}
	files := []file{
		{path: "logsub", mode: 0o755, body: bin},
		{path: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, body: ca},
	}
	err = filepath.WalkDir(rootfs, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(rootfs, p)
		files = append(files, file{path: filepath.ToSlash(rel), mode: 0o644, body: body})
		return nil
	})
	return files, err
}

// tarOf writes the files, with their parent directories, in a fixed order and
// with fixed owners and times, so the layer digest depends on content alone.
func tarOf(files []file, mtime time.Time) ([]byte, error) {
	dirs := map[string]bool{}
	for _, f := range files {
		for d := filepath.Dir(f.path); d != "."; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	type entry struct {
		file
		dir bool
	}
	var entries []entry
	for d := range dirs {
		entries = append(entries, entry{file{path: d, mode: 0o755}, true})
	}
	for _, f := range files {
		entries = append(entries, entry{f, false})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].path < entries[j].path })

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.path, Mode: e.mode, ModTime: mtime, Format: tar.FormatPAX}
		if e.dir {
			h.Typeflag, h.Name = tar.TypeDir, e.path+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// archive tars the OCI layout directory: the form `podman load`, `skopeo copy
// oci-archive:` and `crane push` (after untar) take.
func archive(dir, out string, mtime time.Time) error {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && p != dir {
			paths = append(paths, p)
		}
		return err
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, p := range paths {
		rel := filepath.ToSlash(strings.TrimPrefix(p, dir+string(filepath.Separator)))
		info, err := os.Stat(p)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: rel, Mode: 0o644, ModTime: mtime, Format: tar.FormatPAX}
		if info.IsDir() {
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, rel+"/", 0o755
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			continue
		}
		h.Typeflag, h.Size = tar.TypeReg, info.Size()
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		body, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, body)
		body.Close()
		if err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}
