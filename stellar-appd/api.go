package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"time"

	"stellar.dev/api/appapi"
	"stellar.dev/api/errdefs"
	"stellar.dev/api/gossipapi"
	"stellar.dev/daemon/httpapi"
	"stellar.dev/stellar-appd/internal/logdriver"
)

// Status is the answer of GET /v1/status.
type Status struct {
	Node       string    `json:"node"`
	Waiting    []string  `json:"waiting,omitempty"`
	LastPass   time.Time `json:"last_pass,omitzero"`
	Containers int       `json:"containers"`
}

func (s *service) routes() {
	m := s.env.Mux
	m.Handle("GET /v1/status", httpapi.Handle(s.status))
	m.Handle("POST /v1/apps", httpapi.Handle(s.createApp))
	m.Handle("GET /v1/apps", httpapi.Handle(s.listApps))
	m.Handle("GET /v1/apps/{name}", httpapi.Handle(s.getApp))
	m.Handle("PUT /v1/apps/{name}", httpapi.Handle(s.updateApp))
	m.Handle("DELETE /v1/apps/{name}", httpapi.Handle(s.deleteApp))
	m.Handle("POST /v1/apps/{name}/restart", httpapi.Handle(s.restartApp))
	m.Handle("POST /v1/apps/{name}/services/{service}/restart", httpapi.Handle(s.restartApp))
	m.Handle("POST /v1/apps/{name}/services/{service}/scale", httpapi.Handle(s.scaleApp))
	m.Handle("GET /v1/apps/{name}/logs", httpapi.Handle(s.logs))
	m.Handle("POST /v1/images/import", httpapi.Handle(s.importImage))
	m.Handle("GET /v1/images", httpapi.Handle(s.listImages))
	m.Handle("GET /v1/images/export", httpapi.Handle(s.exportImage))
	m.Handle("DELETE /v1/images/{ref...}", httpapi.Handle(s.removeImage))
	m.Handle("PUT /v1/nodes/{node}/schedule", httpapi.Handle(s.setSchedule))
}

func (s *service) status(w http.ResponseWriter, r *http.Request) error {
	httpapi.WriteJSON(w, http.StatusOK, Status{Node: s.node, Waiting: s.rec.Waiting(), LastPass: s.rec.LastPass(), Containers: len(s.rec.Local())})
	return nil
}

// readApp reads apps/<name>; a missing or deleted app is ErrNotFound.
func (s *service) readApp(ctx context.Context, name string) (appapi.Record, string, error) {
	e, err := s.st.Get(ctx, appapi.AppKey(name))
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return appapi.Record{}, "", errdefs.New(errdefs.ErrNotFound, "no app named %q", name)
		}
		return appapi.Record{}, "", err
	}
	var rec appapi.Record
	if len(e.Value) == 0 || string(e.Value) == "null" {
		return appapi.Record{}, "", errdefs.New(errdefs.ErrNotFound, "no app named %q", name)
	}
	if err := json.Unmarshal(e.Value, &rec); err != nil {
		return appapi.Record{}, "", errdefs.New(errdefs.ErrInternal, "stored app %q is unreadable: %v", name, err)
	}
	return rec, e.Version, nil
}

func decodeApp(r *http.Request) (appapi.App, []string, error) {
	var a appapi.App
	if err := httpapi.DecodeJSON(r, &a); err != nil {
		return appapi.App{}, nil, err
	}
	warns, err := appapi.Check(&a)
	return a, warns, err
}

func (s *service) createApp(w http.ResponseWriter, r *http.Request) error {
	a, warns, err := decodeApp(r)
	if err != nil {
		return err
	}
	if _, _, err := s.readApp(r.Context(), a.Name); err == nil {
		return errdefs.New(errdefs.ErrAlreadyExists, "app %q exists: use update", a.Name)
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	rec := appapi.Record{Spec: a, Generation: 1, Updated: time.Now().UTC()}
	res, err := s.st.Put(r.Context(), appapi.AppKey(a.Name), rec, "")
	if err != nil {
		return err
	}
	s.env.Log.Info("app created", "app", a.Name, "version", res.Version)
	s.trigger()
	httpapi.WriteJSON(w, http.StatusCreated, appapi.PutResult{Name: a.Name, Version: res.Version, Warnings: warns})
	return nil
}

func (s *service) updateApp(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	a, warns, err := decodeApp(r)
	if err != nil {
		return err
	}
	if a.Name != name {
		return errdefs.New(errdefs.ErrInvalidArgument, "the spec names app %q but the request is for %q", a.Name, name)
	}
	return s.change(w, r, name, warns, func(rec *appapi.Record) error {
		prev := rec.Spec
		rec.Previous = &prev
		rec.Spec = a
		rec.Reverted = ""
		return nil
	})
}

// change applies fn to the stored record with If-Match: the request's
// header when given (a conflict if the app moved on), else the version read.
func (s *service) change(w http.ResponseWriter, r *http.Request, name string, warns []string, fn func(*appapi.Record) error) error {
	rec, version, err := s.readApp(r.Context(), name)
	if err != nil {
		return err
	}
	if im := r.Header.Get("If-Match"); im != "" && im != version {
		return errdefs.New(errdefs.ErrConflict, "app %q changed since version %s (now %s): read it again", name, im, version)
	}
	if err := fn(&rec); err != nil {
		return err
	}
	rec.Generation++
	rec.Updated = time.Now().UTC()
	res, err := s.st.Put(r.Context(), appapi.AppKey(name), rec, version)
	if err != nil {
		return err
	}
	s.env.Log.Info("app changed", "app", name, "version", res.Version, "generation", rec.Generation)
	s.trigger()
	httpapi.WriteJSON(w, http.StatusOK, appapi.PutResult{Name: name, Version: res.Version, Warnings: warns})
	return nil
}

func (s *service) scaleApp(w http.ResponseWriter, r *http.Request) error {
	var sc appapi.Scale
	if err := httpapi.DecodeJSON(r, &sc); err != nil {
		return err
	}
	name, svc := r.PathValue("name"), r.PathValue("service")
	return s.change(w, r, name, nil, func(rec *appapi.Record) error {
		sv := rec.Spec.Service(svc)
		if sv == nil {
			return errdefs.New(errdefs.ErrNotFound, "app %q has no service %q", name, svc)
		}
		if sv.Global {
			return errdefs.New(errdefs.ErrInvalidArgument, "service %q is global: it runs one instance per eligible node", svc)
		}
		n := sc.Instances
		sv.Instances = &n
		return appapi.Validate(&rec.Spec)
	})
}

func (s *service) restartApp(w http.ResponseWriter, r *http.Request) error {
	name, svc := r.PathValue("name"), r.PathValue("service")
	return s.change(w, r, name, nil, func(rec *appapi.Record) error {
		if rec.Restarts == nil {
			rec.Restarts = map[string]int{}
		}
		if svc != "" {
			if rec.Spec.Service(svc) == nil {
				return errdefs.New(errdefs.ErrNotFound, "app %q has no service %q", name, svc)
			}
			rec.Restarts[svc]++
			return nil
		}
		for _, sv := range rec.Spec.Services {
			rec.Restarts[sv.Name]++
		}
		return nil
	})
}

func (s *service) deleteApp(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	_, version, err := s.readApp(r.Context(), name)
	if err != nil {
		return err
	}
	if im := r.Header.Get("If-Match"); im != "" && im != version {
		return errdefs.New(errdefs.ErrConflict, "app %q changed since version %s: read it again", name, im)
	}
	if err := s.st.Delete(r.Context(), appapi.AppKey(name), version); err != nil {
		return err
	}
	s.env.Log.Info("app deleted", "app", name)
	s.trigger()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *service) listApps(w http.ResponseWriter, r *http.Request) error {
	l, err := s.st.List(r.Context(), appapi.AppsPrefix)
	if err != nil {
		return err
	}
	out := []appapi.AppSummary{}
	for _, e := range l.Entries {
		var rec appapi.Record
		if len(e.Value) == 0 || json.Unmarshal(e.Value, &rec) != nil || rec.Spec.Name == "" {
			continue
		}
		sum := appapi.AppSummary{Name: rec.Spec.Name, Version: e.Version}
		for _, sv := range rec.Spec.Services {
			sum.Services = append(sum.Services, sv.Name)
		}
		out = append(out, sum)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *service) instancesOf(ctx context.Context, app string) ([]appapi.Instance, error) {
	l, err := s.st.List(ctx, appapi.NodesPrefix)
	if err != nil {
		return nil, err
	}
	out := []appapi.Instance{}
	for _, e := range l.Entries {
		_, a, _, _, ok := appapi.ParseInstanceKey(e.Key)
		if !ok || a != app {
			continue
		}
		var in appapi.Instance
		if json.Unmarshal(e.Value, &in) == nil {
			if e.OwnerFailed {
				in.Status = "node-failed"
			}
			out = append(out, in)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Service != out[j].Service {
			return out[i].Service < out[j].Service
		}
		if out[i].Index != out[j].Index {
			return out[i].Index < out[j].Index
		}
		return out[i].Node < out[j].Node
	})
	return out, nil
}

func (s *service) getApp(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	rec, version, err := s.readApp(r.Context(), name)
	if err != nil {
		return err
	}
	ins, err := s.instancesOf(r.Context(), name)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, appapi.AppStatus{Record: rec, Version: version, Instances: ins})
	return nil
}

func (s *service) importImage(w http.ResponseWriter, r *http.Request) error {
	imgs, err := s.rt.Import(r.Context(), r.Body)
	if err != nil {
		return err
	}
	if len(imgs) == 0 {
		return errdefs.New(errdefs.ErrInvalidArgument, "the archive holds no named image (an OCI archive needs the io.containerd.image.name or org.opencontainers.image.ref.name annotation)")
	}
	for _, im := range imgs {
		s.env.Log.Info("image imported", "image", im.Name, "digest", im.Digest)
	}
	s.trigger()
	s.imagesDirty()
	httpapi.WriteJSON(w, http.StatusOK, imgs)
	return nil
}

func (s *service) listImages(w http.ResponseWriter, r *http.Request) error {
	imgs, err := s.rt.Images(r.Context())
	if err != nil {
		return err
	}
	sort.Slice(imgs, func(i, j int) bool { return imgs[i].Name < imgs[j].Name })
	httpapi.WriteJSON(w, http.StatusOK, imgs)
	return nil
}

// exportImage streams an OCI archive of ?ref= (other nodes fetch images
// this way, relayed by the peer port).
func (s *service) exportImage(w http.ResponseWriter, r *http.Request) error {
	ref := r.URL.Query().Get("ref")
	if ref == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "ref is empty: name the image to export (?ref=NAME)")
	}
	ok, err := s.rt.HasImage(r.Context(), ref)
	if err != nil {
		return err
	}
	if !ok {
		return errdefs.New(errdefs.ErrNotFound, "image %s is not on node %s", ref, s.node)
	}
	if imgs, err := s.rt.Images(r.Context()); err == nil {
		for _, im := range imgs {
			if im.Name == ref {
				w.Header().Set(DigestHeader, im.Digest)
			}
		}
	}
	w.Header().Set("Content-Type", "application/x-tar")
	w.WriteHeader(http.StatusOK)
	if err := s.rt.Export(r.Context(), ref, w); err != nil {
		// The status is sent: cut the stream so the reader sees a broken archive.
		s.env.Log.Warn("export image", "image", ref, "err", err)
		panic(http.ErrAbortHandler)
	}
	s.env.Log.Info("image exported", "image", ref, "caller", r.Header.Get("X-Stellar-Caller"))
	return nil
}

func (s *service) removeImage(w http.ResponseWriter, r *http.Request) error {
	ref := r.PathValue("ref")
	if ref == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "image reference is empty")
	}
	if err := s.rt.RemoveImage(r.Context(), ref); err != nil {
		return err
	}
	s.env.Log.Info("image removed", "image", ref)
	s.imagesDirty()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *service) setSchedule(w http.ResponseWriter, r *http.Request) error {
	node := r.PathValue("node")
	var sc appapi.Schedule
	if err := httpapi.DecodeJSON(r, &sc); err != nil {
		return err
	}
	switch sc.State {
	case appapi.Schedulable, appapi.Cordoned, appapi.Drained:
	default:
		return errdefs.New(errdefs.ErrInvalidArgument, "schedule state %q is not cordon, drain or empty (uncordon)", sc.State)
	}
	if ms, err := s.st.Members(r.Context()); err == nil {
		if !slices.ContainsFunc(ms, func(m gossipapi.Member) bool { return m.Name == node }) && node != s.node {
			return errdefs.New(errdefs.ErrNotFound, "no node named %q in the cluster", node)
		}
	}
	sc.Updated = time.Now().UTC()
	if sc.State == appapi.Schedulable {
		if err := s.st.Delete(r.Context(), appapi.ScheduleKey(node), ""); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return err
		}
	} else if _, err := s.st.Put(r.Context(), appapi.ScheduleKey(node), sc, ""); err != nil {
		return err
	}
	s.env.Log.Info("node schedule changed", "node", node, "state", sc.State)
	s.trigger()
	httpapi.WriteJSON(w, http.StatusOK, sc)
	return nil
}

// logs streams the output of the app's instances on this node as NDJSON:
// from the journal (journalctl STELLAR_APP=...) when the host has one, else
// from the log driver's files.
func (s *service) logs(w http.ResponseWriter, r *http.Request) error {
	name, svc := r.PathValue("name"), r.URL.Query().Get("service")
	follow := r.URL.Query().Get("follow") == "true"
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t, terr := time.Parse(time.RFC3339, v)
			if terr != nil {
				return errdefs.New(errdefs.ErrInvalidArgument, "since %q is neither a duration (10m) nor an RFC 3339 time", v)
			}
			since = t
		} else {
			since = time.Now().Add(-d)
		}
	}
	if r.URL.Query().Get("local") != "true" {
		return s.clusterLogs(w, r, name, svc, follow, since)
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	flush := func() {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	emit := func(l appapi.LogLine) error {
		if !since.IsZero() && l.Time.Before(since) {
			return nil
		}
		l.Node = s.node
		if err := enc.Encode(l); err != nil {
			return err
		}
		flush()
		return nil
	}
	return s.localLogs(r.Context(), name, svc, follow, since, emit)
}

// localLogs reads the output of the app's instances on this node.
func (s *service) localLogs(ctx context.Context, name, svc string, follow bool, since time.Time, emit func(appapi.LogLine) error) error {
	if !since.IsZero() {
		next := emit
		emit = func(l appapi.LogLine) error {
			if l.Time.Before(since) {
				return nil
			}
			return next(l)
		}
	}
	if _, err := os.Stat("/run/systemd/journal/socket"); err == nil {
		if _, err := exec.LookPath("journalctl"); err == nil {
			return s.journalLogs(ctx, name, svc, follow, since, emit)
		}
	}
	return s.fileLogs(ctx, name, svc, follow, emit)
}

func (s *service) journalLogs(ctx context.Context, app, svc string, follow bool, since time.Time, emit func(appapi.LogLine) error) error {
	args := []string{"-o", "json", "--no-pager", "STELLAR_APP=" + app}
	if svc != "" {
		args = append(args, "STELLAR_SERVICE="+svc)
	}
	if !since.IsZero() {
		args = append(args, "--since", since.Format("2006-01-02 15:04:05"))
	}
	if follow {
		args = append(args, "-f")
	}
	cmd := exec.CommandContext(ctx, "journalctl", args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer cmd.Wait()
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e map[string]any
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		l := appapi.LogLine{Instance: str(e["STELLAR_INSTANCE"]), Stream: str(e["STELLAR_STREAM"]), Message: str(e["MESSAGE"])}
		if us := str(e["__REALTIME_TIMESTAMP"]); us != "" {
			var n int64
			for _, c := range us {
				n = n*10 + int64(c-'0')
			}
			l.Time = time.UnixMicro(n).UTC()
		}
		if err := emit(l); err != nil {
			return nil
		}
	}
	return nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// fileLogs reads the log driver's files of the app's containers.
func (s *service) fileLogs(ctx context.Context, app, svc string, follow bool, emit func(appapi.LogLine) error) error {
	prefix := app + "."
	if svc != "" {
		prefix += svc + "."
	}
	ents, _ := os.ReadDir(s.logDir())
	type tail struct {
		f   *os.File
		br  *bufio.Reader
		ins string
	}
	var tails []*tail
	for _, e := range ents {
		n := e.Name()
		if !strings.HasPrefix(n, prefix) || !strings.HasSuffix(n, ".log") {
			continue
		}
		f, err := os.Open(logdriver.FilePath(s.logDir(), strings.TrimSuffix(n, ".log")))
		if err != nil {
			continue
		}
		defer f.Close()
		id := strings.TrimSuffix(n, ".log")
		a, rest, _ := strings.Cut(id, ".")
		sv, idx, _ := strings.Cut(rest, ".")
		_ = a
		tails = append(tails, &tail{f: f, br: bufio.NewReader(f), ins: idx + "." + sv + "." + app})
	}
	for {
		for _, t := range tails {
			for {
				b, err := t.br.ReadBytes('\n')
				if err != nil {
					if len(b) > 0 {
						// a partial line: read it again once complete
						_, _ = t.f.Seek(-int64(len(b)), 1)
						t.br.Reset(t.f)
					}
					break
				}
				var l logdriver.Line
				if json.Unmarshal(b, &l) != nil {
					continue
				}
				if err := emit(appapi.LogLine{Time: l.Time, Instance: t.ins, Stream: l.Stream, Message: l.Message}); err != nil {
					return nil
				}
			}
		}
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}
