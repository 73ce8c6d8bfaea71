// Command mkimage writes a container image of static binaries and small files, with no base
// image and no registry (see package ociimage): `make image` runs it.
//
//	mkimage -o holdfast.tar -tag localhost/holdfast:v1 -file bin/holdfast:/holdfast \
//	    -entrypoint /holdfast -user 65532:65532 -label org.opencontainers.image.version=v1
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/holdfast/holdfast/internal/ociimage"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(2)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	out := fs.String("o", "", "the image tar to write")
	var tags, files, labels, env list
	fs.Var(&tags, "tag", "image name and tag (repeatable)")
	fs.Var(&files, "file", "SRC:DST[:MODE] a file of the build machine and where it goes (repeatable; MODE octal, default 0755)")
	fs.Var(&labels, "label", "KEY=VALUE image label (repeatable)")
	fs.Var(&env, "env", "KEY=VALUE environment variable (repeatable)")
	entrypoint := fs.String("entrypoint", "", "the command the image runs")
	user := fs.String("user", "65532:65532", "UID:GID the image runs as")
	created := fs.Int64("created", -1, "creation time, Unix seconds (default $SOURCE_DATE_EPOCH, else 0)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || len(tags) == 0 || len(files) == 0 {
		return errors.New("-o, -tag and -file are required")
	}
	img := ociimage.Image{Tags: tags, User: *user, Env: env, OS: "linux", Architecture: runtime.GOARCH, Labels: map[string]string{}}
	if *entrypoint != "" {
		img.Entrypoint = []string{*entrypoint}
	}
	when := *created
	if when < 0 {
		when = 0
		if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return fmt.Errorf("$SOURCE_DATE_EPOCH %q: %w", s, err)
			}
			when = v
		}
	}
	img.Created = time.Unix(when, 0)
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return fmt.Errorf("-label %q: want KEY=VALUE", l)
		}
		img.Labels[k] = v
	}
	for _, f := range files {
		parts := strings.Split(f, ":")
		if len(parts) < 2 || len(parts) > 3 {
			return fmt.Errorf("-file %q: want SRC:DST[:MODE]", f)
		}
		mode := int64(0o755)
		if len(parts) == 3 {
			m, err := strconv.ParseInt(parts[2], 8, 64)
			if err != nil {
				return fmt.Errorf("-file %q: mode: %w", f, err)
			}
			mode = m
		}
		data, err := os.ReadFile(parts[0])
		if err != nil {
			return err
		}
		img.Files = append(img.Files, ociimage.File{Path: parts[1], Mode: mode, Data: data})
	}
	uid, gid, _ := strings.Cut(*user, ":")
	if uid != "0" && uid != "" {
		if gid == "" {
			gid = uid
		}
		img.Files = append(img.Files,
			ociimage.File{Path: "/etc/passwd", Mode: 0o644, Data: fmt.Appendf(nil, "root:x:0:0:root:/:/sbin/nologin\nnonroot:x:%s:%s:nonroot:/:/sbin/nologin\n", uid, gid)},
			ociimage.File{Path: "/etc/group", Mode: 0o644, Data: fmt.Appendf(nil, "root:x:0:\nnonroot:x:%s:\n", gid)})
	}
	tmp := *out + ".tmp"
	f, err := os.Create(tmp) //nolint:gosec // the output path is the operator's own flag
	if err != nil {
		return err
	}
	if err := img.Write(f); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, *out)
}
