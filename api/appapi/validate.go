package appapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"stellar.dev/api/errdefs"
)

// Defaults applied by Normalize.
const (
	DefaultRuntime        = "io.containerd.runc.v2"
	LegacyRuntime         = "io.containerd.runtime.v1.linux"
	DefaultHealthInterval = 10 * time.Second
	DefaultHealthTimeout  = 2 * time.Second
	DefaultHealthRetries  = 3
	MaxInstances          = 1000
	MaxSpecBytes          = 1 << 20
)

var (
	dnsLabel   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	nodeName   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,253})$`)
	runtimeRe  = regexp.MustCompile(`^[a-z0-9]+(\.[a-z0-9_-]+)*\.v[0-9]+(\.[a-z0-9_-]+)*$`)
	snapRe     = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)
	imageRe    = regexp.MustCompile(`^[a-z0-9]([a-z0-9._/:@-]*)[a-zA-Z0-9_.-]*$`)
	envKeyRe   = regexp.MustCompile(`^[^=\x00]+$`)
	labelKeyRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,252})$`)
	hostRe     = regexp.MustCompile(`^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// Parse decodes a JSON application spec (unknown keys are errors), then
// normalizes and validates it. The warnings say what was rewritten (the
// legacy runtime name). The error is an errdefs.ErrInvalidArgument naming
// every problem: which service, which field, why.
func Parse(data []byte) (App, []string, error) {
	var a App
	if len(data) > MaxSpecBytes {
		return App{}, nil, errdefs.New(errdefs.ErrInvalidArgument, "app spec is larger than %d bytes", MaxSpecBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		if errors.Is(err, io.EOF) {
			return App{}, nil, errdefs.New(errdefs.ErrInvalidArgument, "app spec is empty")
		}
		return App{}, nil, errdefs.New(errdefs.ErrInvalidArgument, "decode app spec: %s", jsonErr(err))
	}
	if dec.More() {
		return App{}, nil, errdefs.New(errdefs.ErrInvalidArgument, "app spec has data after the JSON value")
	}
	warns, err := Check(&a)
	return a, warns, err
}

func jsonErr(err error) string {
	var ute *json.UnmarshalTypeError
	if errors.As(err, &ute) {
		return fmt.Sprintf("field %q: expected %s, got JSON %s", ute.Field, ute.Type, ute.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("syntax error at byte %d: %v", se.Offset, se)
	}
	return err.Error()
}

// Check normalizes a (defaults, the replicas alias, the legacy runtime)
// and validates it.
func Check(a *App) ([]string, error) {
	warns, err := Normalize(a)
	if err != nil {
		return warns, err
	}
	return warns, Validate(a)
}

// Normalize fills defaults in place and returns warnings about rewrites.
func Normalize(a *App) ([]string, error) {
	var warns []string
	var errs problems
	for i := range a.Services {
		s := &a.Services[i]
		where := svcWhere(i, s)
		if s.Replicas != nil {
			if s.Instances != nil && *s.Instances != *s.Replicas {
				errs.add(where, "replicas", "is %d but instances is %d: give only one", *s.Replicas, *s.Instances)
			} else {
				n := *s.Replicas
				s.Instances = &n
			}
			s.Replicas = nil
		}
		if s.Instances == nil && !s.Global {
			n := 1
			s.Instances = &n
		}
		if s.Runtime == LegacyRuntime {
			warns = append(warns, fmt.Sprintf("%s: runtime %s is gone from containerd: using %s", where, LegacyRuntime, DefaultRuntime))
			s.Runtime = DefaultRuntime
		}
		for j := range s.Ports {
			if s.Ports[j].Protocol == "" {
				s.Ports[j].Protocol = "tcp"
			}
		}
		if h := s.Health; h != nil {
			if h.Interval == 0 {
				h.Interval = Duration(DefaultHealthInterval)
			}
			if h.Timeout == 0 {
				h.Timeout = Duration(DefaultHealthTimeout)
			}
			if h.Retries == 0 {
				h.Retries = DefaultHealthRetries
			}
		}
		if s.Update.Parallel == 0 {
			s.Update.Parallel = 1
		}
	}
	return warns, errs.err()
}

// Validate checks a normalized app and returns an errdefs.ErrInvalidArgument
// listing every problem, or nil.
func Validate(a *App) error {
	var p problems
	if a.Name == "" {
		p.add("app", "name", "is required")
	} else if !dnsLabel.MatchString(a.Name) {
		p.add("app", "name", "%q is not a DNS label (lowercase letters, digits and '-', at most 63)", a.Name)
	}
	checkLabels(&p, "app", "labels", a.Labels)
	if len(a.Services) == 0 {
		p.add("app", "services", "at least one service is required")
	}
	seen := map[string]bool{}
	hostPorts := map[string]string{}
	for i := range a.Services {
		s := &a.Services[i]
		w := svcWhere(i, s)
		if s.Name == "" {
			p.add(w, "name", "is required")
		} else if !dnsLabel.MatchString(s.Name) {
			p.add(w, "name", "%q is not a DNS label (lowercase letters, digits and '-', at most 63)", s.Name)
		} else if seen[s.Name] {
			p.add(w, "name", "%q is used by two services", s.Name)
		}
		seen[s.Name] = true
		validateService(&p, w, s, hostPorts)
	}
	return p.err()
}

func validateService(p *problems, w string, s *Service, hostPorts map[string]string) {
	switch {
	case s.Image == "":
		p.add(w, "image", "is required")
	case len(s.Image) > 512 || !imageRe.MatchString(s.Image):
		p.add(w, "image", "%q is not an image reference", s.Image)
	}
	if s.Runtime != "" && !runtimeRe.MatchString(s.Runtime) {
		p.add(w, "runtime", "%q is not a containerd runtime name (like io.containerd.runc.v2)", s.Runtime)
	}
	if s.Snapshotter != "" && !snapRe.MatchString(s.Snapshotter) {
		p.add(w, "snapshotter", "%q is not a snapshotter name", s.Snapshotter)
	}
	pr := s.Process
	if pr.UID < 0 || pr.UID > 1<<32-2 {
		p.add(w, "process.uid", "must be 0..4294967294, got %d", pr.UID)
	}
	if pr.GID < 0 || pr.GID > 1<<32-2 {
		p.add(w, "process.gid", "must be 0..4294967294, got %d", pr.GID)
	}
	for i, a := range pr.Args {
		if strings.ContainsRune(a, 0) {
			p.add(w, fmt.Sprintf("process.args[%d]", i), "contains a NUL byte")
		}
	}
	if len(pr.Args) > 0 && pr.Args[0] == "" {
		p.add(w, "process.args[0]", "the command is empty")
	}
	for i, e := range pr.Env {
		k, _, ok := strings.Cut(e, "=")
		if !ok || !envKeyRe.MatchString(k) || strings.ContainsRune(e, 0) {
			p.add(w, fmt.Sprintf("process.env[%d]", i), "%q is not KEY=value", e)
		}
	}
	if pr.Cwd != "" && !strings.HasPrefix(pr.Cwd, "/") {
		p.add(w, "process.cwd", "%q is not an absolute path", pr.Cwd)
	}
	checkLabels(p, w, "labels", s.Labels)
	for i, m := range s.Mounts {
		f := fmt.Sprintf("mounts[%d]", i)
		switch m.Type {
		case "bind", "rbind":
			if !strings.HasPrefix(m.Source, "/") {
				p.add(w, f+".source", "a bind mount needs an absolute source path, got %q", m.Source)
			}
		case "tmpfs", "proc", "sysfs", "devpts", "mqueue":
		case "":
			p.add(w, f+".type", "is required (bind, tmpfs, ...)")
		default:
			p.add(w, f+".type", "%q is not a supported mount type (bind, tmpfs, proc, sysfs, devpts, mqueue)", m.Type)
		}
		if !strings.HasPrefix(m.Destination, "/") {
			p.add(w, f+".destination", "%q is not an absolute path", m.Destination)
		} else if m.Destination == "/" {
			p.add(w, f+".destination", "cannot mount over /")
		}
		if strings.Contains(m.Source, "\x00") || strings.Contains(m.Destination, "\x00") {
			p.add(w, f, "contains a NUL byte")
		}
	}
	r := s.Resources
	if r.CPU < 0 || r.CPU > 1024 || r.CPU != r.CPU {
		p.add(w, "resources.cpu", "must be 0..1024 cores, got %v", r.CPU)
	} else if r.CPU > 0 && r.CPU < 0.01 {
		p.add(w, "resources.cpu", "must be at least 0.01 cores, got %v", r.CPU)
	}
	if r.Memory < 0 || r.Memory > 1<<22 {
		p.add(w, "resources.memory", "must be 0..4194304 MiB, got %d", r.Memory)
	} else if r.Memory > 0 && r.Memory < 4 {
		p.add(w, "resources.memory", "must be at least 4 MiB, got %d", r.Memory)
	}
	if s.Global && s.Instances != nil {
		p.add(w, "instances", "a global service runs one instance per eligible node: leave instances out")
	}
	if s.Instances != nil && (*s.Instances < 0 || *s.Instances > MaxInstances) {
		p.add(w, "instances", "must be 0..%d, got %d", MaxInstances, *s.Instances)
	}
	for i, n := range s.Placement.NodeIDs {
		if !nodeName.MatchString(n) {
			p.add(w, fmt.Sprintf("placement_preference.node_ids[%d]", i), "%q is not a node name", n)
		}
	}
	for k, v := range s.Placement.Labels {
		if !labelKeyRe.MatchString(k) {
			p.add(w, "placement_preference.labels", "key %q is not a label key", k)
		}
		if strings.ContainsAny(v, "\x00\n") {
			p.add(w, "placement_preference.labels", "value of %q contains a control character", k)
		}
	}
	for i, e := range s.Endpoints {
		f := fmt.Sprintf("endpoints[%d]", i)
		if !dnsLabel.MatchString(e.Service) {
			p.add(w, f+".service", "%q is not a DNS label", e.Service)
		}
		switch e.Protocol {
		case "http", "https", "tcp", "udp":
		default:
			p.add(w, f+".protocol", "%q is not http, https, tcp or udp", e.Protocol)
		}
		if e.Host != "" && !hostRe.MatchString(e.Host) {
			p.add(w, f+".host", "%q is not a host name", e.Host)
		}
		if e.Path != "" && (!strings.HasPrefix(e.Path, "/") || strings.ContainsAny(e.Path, " ?#\r\n\x00")) {
			p.add(w, f+".path", "%q is not a URL path prefix starting with /", e.Path)
		}
		if e.Port < 1 || e.Port > 65535 {
			p.add(w, f+".port", "must be 1..65535, got %d", e.Port)
		}
		if e.TLS && e.Host == "" {
			p.add(w, f+".tls", "needs a host to get a certificate for")
		}
	}
	if h := s.Health; h != nil {
		n := 0
		if h.HTTP != "" {
			n++
			if !strings.HasPrefix(h.HTTP, "/") || strings.ContainsAny(h.HTTP, " \r\n\x00") {
				p.add(w, "health.http", "%q is not a URL path starting with /", h.HTTP)
			}
		}
		if h.TCP {
			n++
		}
		if len(h.Exec) > 0 {
			n++
			if h.Exec[0] == "" {
				p.add(w, "health.exec[0]", "the command is empty")
			}
		}
		if n != 1 {
			p.add(w, "health", "give exactly one of http, tcp or exec")
		}
		if (h.HTTP != "" || h.TCP) && (h.Port < 1 || h.Port > 65535) {
			p.add(w, "health.port", "must be 1..65535, got %d", h.Port)
		}
		if h.Interval.D() < 100*time.Millisecond || h.Interval.D() > time.Hour {
			p.add(w, "health.interval", "must be 100ms..1h, got %s", h.Interval.D())
		}
		if h.Timeout.D() <= 0 || h.Timeout.D() > h.Interval.D() {
			p.add(w, "health.timeout", "must be positive and at most the interval (%s), got %s", h.Interval.D(), h.Timeout.D())
		}
		if h.Retries < 1 || h.Retries > 100 {
			p.add(w, "health.retries", "must be 1..100, got %d", h.Retries)
		}
	}
	for i, pt := range s.Ports {
		f := fmt.Sprintf("ports[%d]", i)
		if pt.Host < 1 || pt.Host > 65535 {
			p.add(w, f+".host", "must be 1..65535, got %d", pt.Host)
		}
		if pt.Container < 1 || pt.Container > 65535 {
			p.add(w, f+".container", "must be 1..65535, got %d", pt.Container)
		}
		if pt.Protocol != "tcp" && pt.Protocol != "udp" {
			p.add(w, f+".protocol", "%q is not tcp or udp", pt.Protocol)
		}
		key := fmt.Sprintf("%d/%s", pt.Host, pt.Protocol)
		if other, ok := hostPorts[key]; ok {
			p.add(w, f+".host", "port %s is already published by %s", key, other)
		}
		hostPorts[key] = w
		if !s.NetworkEnabled() {
			p.add(w, f, "publishing ports needs network: true")
		}
	}
	u := s.Update
	if u.Parallel < 1 || u.Parallel > MaxInstances {
		p.add(w, "update.parallel", "must be 1..%d, got %d", MaxInstances, u.Parallel)
	}
	if u.Delay.D() < 0 || u.Delay.D() > 24*time.Hour {
		p.add(w, "update.delay", "must be 0..24h, got %s", u.Delay.D())
	}
}

func checkLabels(p *problems, w, field string, labels []string) {
	for i, l := range labels {
		k, _, ok := strings.Cut(l, "=")
		if !ok || !labelKeyRe.MatchString(k) || strings.ContainsAny(l, "\x00\n") {
			p.add(w, fmt.Sprintf("%s[%d]", field, i), "%q is not key=value", l)
		}
	}
}

func svcWhere(i int, s *Service) string {
	if s.Name != "" {
		return fmt.Sprintf("service %q", s.Name)
	}
	return fmt.Sprintf("services[%d]", i)
}

// problems collects validation messages.
type problems []string

func (p *problems) add(where, field, format string, args ...any) {
	*p = append(*p, fmt.Sprintf("%s: %s: %s", where, field, fmt.Sprintf(format, args...)))
}

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return errdefs.New(errdefs.ErrInvalidArgument, "invalid app spec: %s", strings.Join(p, "; "))
}

// LabelMap turns "k=v" labels into a map.
func LabelMap(labels []string) map[string]string {
	m := make(map[string]string, len(labels))
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		m[k] = v
	}
	return m
}
