// Package ociimage writes a container image — one layer of files, no base image — as one tar
// that is both an OCI image layout (oci-layout, index.json, blobs/) and a `docker save`
// archive (manifest.json): `ctr images import`, `docker load`, `skopeo copy oci-archive:` and
// `crane push` all take it. Nothing is downloaded, and the same inputs give the same bytes
// (entries sorted, owners and times fixed), so an image can be rebuilt and compared.
package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"time"
)

// File is one file of the image's layer.
type File struct {
	Path string // absolute, e.g. /holdfast
	Mode int64  // e.g. 0o755
	Data []byte
}

// Image describes an image.
type Image struct {
	Files []File
	// Tags name the image, e.g. "registry.example.com/holdfast:v1.2.3".
	Tags []string
	// Entrypoint, User ("65532:65532"), Env, WorkingDir: the image's run configuration.
	Entrypoint []string
	User       string
	Env        []string
	WorkingDir string
	// Labels become the image config's labels and the manifest's annotations
	// (org.opencontainers.image.version, .revision, .source, ...).
	Labels map[string]string
	// Created is the image's creation time, and every file's (SOURCE_DATE_EPOCH).
	Created time.Time
	// OS and Architecture, e.g. linux/amd64.
	OS, Architecture string
}

const (
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaIndex    = "application/vnd.oci.image.index.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Write writes the image's tar to w.
func (img Image) Write(w io.Writer) error {
	if len(img.Tags) == 0 {
		return errors.New("ociimage: an image needs a tag")
	}
	if img.OS == "" || img.Architecture == "" {
		return errors.New("ociimage: an image needs an OS and an architecture")
	}
	img.Created = img.Created.UTC().Truncate(time.Second) // tar keeps whole seconds
	tarred, err := img.layer()
	if err != nil {
		return err
	}
	diffID := digest(tarred) // the uncompressed layer's digest, as the config lists it
	layer, err := gzipped(tarred)
	if err != nil {
		return err
	}
	layerDigest := digest(layer)
	created := img.Created.UTC().Format(time.RFC3339)
	config, err := json.Marshal(map[string]any{
		"created":      created,
		"architecture": img.Architecture,
		"os":           img.OS,
		"config": map[string]any{
			"User": img.User, "Env": img.Env, "Entrypoint": img.Entrypoint, "WorkingDir": img.WorkingDir, "Labels": img.Labels,
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{diffID}},
		"history": []map[string]any{{"created": created, "created_by": "holdfast ociimage"}},
	})
	if err != nil {
		return err
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaManifest,
		"config":        descriptor{MediaType: mediaConfig, Digest: digest(config), Size: int64(len(config))},
		"layers":        []descriptor{{MediaType: mediaLayer, Digest: layerDigest, Size: int64(len(layer))}},
		"annotations":   img.Labels,
	})
	if err != nil {
		return err
	}
	var manifests []descriptor
	for _, tag := range img.Tags {
		manifests = append(manifests, descriptor{MediaType: mediaManifest, Digest: digest(manifest), Size: int64(len(manifest)),
			Annotations: map[string]string{
				"io.containerd.image.name":          tag,
				"org.opencontainers.image.ref.name": refName(tag),
			}})
	}
	index, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mediaIndex, "manifests": manifests})
	if err != nil {
		return err
	}
	docker, err := json.Marshal([]map[string]any{{
		"Config":   blob(config),
		"RepoTags": img.Tags,
		"Layers":   []string{blob(layer)},
	}})
	if err != nil {
		return err
	}
	entries := map[string][]byte{
		"oci-layout":    []byte(`{"imageLayoutVersion":"1.0.0"}`),
		"index.json":    index,
		"manifest.json": docker,
		blob(config):    config,
		blob(layer):     layer,
		blob(manifest):  manifest,
	}
	return writeTar(w, entries, []string{"blobs/", "blobs/sha256/"}, img.Created)
}

// refName is the tag part of a reference, as an OCI layout names it ("v1.2.3").
func refName(tag string) string {
	if i := strings.LastIndexByte(tag, ':'); i > strings.LastIndexByte(tag, '/') {
		return tag[i+1:]
	}
	return "latest"
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func blob(b []byte) string { return "blobs/sha256/" + strings.TrimPrefix(digest(b), "sha256:") }

// layer is the image's one layer: its files and the directories above them, sorted, owned by
// root, dated Created.
func (img Image) layer() ([]byte, error) {
	files := map[string][]byte{}
	modes := map[string]int64{}
	dirs := map[string]bool{}
	for _, f := range img.Files {
		p := strings.TrimPrefix(path.Clean(f.Path), "/")
		if p == "" || p == "." || strings.HasPrefix(p, "..") {
			return nil, fmt.Errorf("ociimage: bad path %q", f.Path)
		}
		if _, dup := files[p]; dup {
			return nil, fmt.Errorf("ociimage: %s twice", f.Path)
		}
		files[p], modes[p] = f.Data, f.Mode
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			dirs[d+"/"] = true
		}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files)+len(dirs))
	for p := range files {
		names = append(names, p)
	}
	for d := range dirs {
		names = append(names, d)
	}
	slices.Sort(names)
	for _, n := range names {
		h := &tar.Header{Name: n, Mode: 0o755, Typeflag: tar.TypeDir, ModTime: img.Created, Format: tar.FormatUSTAR}
		if data, ok := files[n]; ok {
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, modes[n], int64(len(data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(files[n]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// gzipped compresses b the same way every time: no name, no time in the header.
func gzipped(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeTar writes entries (and dirs, which must come first) in name order.
func writeTar(w io.Writer, entries map[string][]byte, dirs []string, mtime time.Time) error {
	tw := tar.NewWriter(w)
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Name: d, Mode: 0o755, Typeflag: tar.TypeDir, ModTime: mtime, Format: tar.FormatUSTAR}); err != nil {
			return err
		}
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(entries[n])), Typeflag: tar.TypeReg, ModTime: mtime, Format: tar.FormatUSTAR}); err != nil {
			return err
		}
		if _, err := tw.Write(entries[n]); err != nil {
			return err
		}
	}
	return tw.Close()
}
