package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// imageMap resolves a container image to the local executable standing in for its
// entrypoint. The file is read on every lookup so the stack can change it live.
type imageMap struct{ path string }

type imageFile struct {
	Images map[string]string `json:"images"`
}

// errImageNotMapped is reported on the Pod like an image pull failure.
type errImageNotMapped struct{ image, file string }

func (e errImageNotMapped) Error() string {
	return fmt.Sprintf("image %q is not mapped to a local executable (add it to %s)", e.image, e.file)
}

func (m imageMap) resolve(image string) (string, error) {
	raw, err := os.ReadFile(m.path)
	if err != nil {
		return "", fmt.Errorf("read image map: %w", err)
	}
	var f imageFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return "", fmt.Errorf("parse image map %s: %w", m.path, err)
	}
	for _, key := range []string{image, repository(image)} {
		if exe, ok := f.Images[key]; ok {
			if _, err := os.Stat(exe); err != nil {
				return "", fmt.Errorf("image %q maps to %s: %w", image, exe, err)
			}
			return exe, nil
		}
	}
	return "", errImageNotMapped{image: image, file: m.path}
}

// repository strips the tag and digest: "reg:5000/a/b:1.0@sha256:…" → "reg:5000/a/b".
func repository(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image
}
