package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func readTar(t *testing.T, r io.Reader) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = b
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" {
			t.Errorf("%s owned by %d:%d %q", h.Name, h.Uid, h.Gid, h.Uname)
		}
	}
}

// TestImageIsOCIAndDockerArchive: the tar holds an OCI layout whose index names the image, a
// docker-save manifest pointing at the same blobs, every blob under its own digest, a config
// whose diff_id is the uncompressed layer's, and the files with their modes; the same inputs
// give the same bytes.
func TestImageIsOCIAndDockerArchive(t *testing.T) {
	img := Image{
		Files:      []File{{Path: "/holdfast", Mode: 0o755, Data: []byte("binary")}, {Path: "/etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0::/:\n")}},
		Tags:       []string{"registry.example.com/holdfast:v1.2.3"},
		Entrypoint: []string{"/holdfast"}, User: "65532:65532",
		Labels:  map[string]string{"org.opencontainers.image.version": "v1.2.3", "org.opencontainers.image.revision": "abc"},
		Created: time.Unix(1700000000, 123), OS: "linux", Architecture: "amd64",
	}
	var one, two bytes.Buffer
	if err := img.Write(&one); err != nil {
		t.Fatal(err)
	}
	if err := img.Write(&two); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(one.Bytes(), two.Bytes()) {
		t.Fatal("the same image written twice differs")
	}
	files := readTar(t, bytes.NewReader(one.Bytes()))
	for name, b := range files {
		if d, ok := strings.CutPrefix(name, "blobs/sha256/"); ok && d != "" {
			sum := sha256.Sum256(b)
			if hex.EncodeToString(sum[:]) != d {
				t.Errorf("blob %s holds content of another digest", name)
			}
		}
	}
	var index struct {
		Manifests []struct {
			Digest      string
			Annotations map[string]string
		}
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v %s", err, files["index.json"])
	}
	if a := index.Manifests[0].Annotations; a["io.containerd.image.name"] != img.Tags[0] || a["org.opencontainers.image.ref.name"] != "v1.2.3" {
		t.Errorf("index annotations %v", a)
	}
	var manifest struct {
		Config struct{ Digest string }
		Layers []struct{ Digest, MediaType string }
	}
	if err := json.Unmarshal(files["blobs/sha256/"+strings.TrimPrefix(index.Manifests[0].Digest, "sha256:")], &manifest); err != nil || len(manifest.Layers) != 1 {
		t.Fatalf("manifest: %v", err)
	}
	var docker []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &docker); err != nil || len(docker) != 1 ||
		docker[0].Config != "blobs/sha256/"+strings.TrimPrefix(manifest.Config.Digest, "sha256:") ||
		docker[0].Layers[0] != "blobs/sha256/"+strings.TrimPrefix(manifest.Layers[0].Digest, "sha256:") || docker[0].RepoTags[0] != img.Tags[0] {
		t.Fatalf("docker manifest.json %s does not match the OCI manifest", files["manifest.json"])
	}
	var config struct {
		Config struct {
			User       string
			Entrypoint []string
			Labels     map[string]string
		}
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(files[docker[0].Config], &config); err != nil {
		t.Fatal(err)
	}
	if config.Config.User != "65532:65532" || config.Config.Entrypoint[0] != "/holdfast" || config.Config.Labels["org.opencontainers.image.revision"] != "abc" {
		t.Errorf("config %+v", config.Config)
	}
	zr, err := gzip.NewReader(bytes.NewReader(files[docker[0].Layers[0]]))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	if config.RootFS.DiffIDs[0] != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Error("diff_id is not the uncompressed layer's digest")
	}
	tr := tar.NewReader(bytes.NewReader(raw))
	got := map[string]int64{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = h.Mode
	}
	if got["holdfast"] != 0o755 || got["etc/passwd"] != 0o644 || got["etc/"] != 0o755 {
		t.Errorf("layer entries %v", got)
	}
}
