package route

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"stellar.dev/api/gossipapi"
	"stellar.dev/api/proxyapi"
)

func entry(key string, v any) gossipapi.Entry {
	raw, _ := json.Marshal(v)
	if s, ok := v.(string); ok {
		raw = []byte(s)
	}
	return gossipapi.Entry{Key: key, Value: raw}
}

// summary prints a table as "host path app/svc=weight[addrs]" lines.
func summary(t *Table) string {
	var lines []string
	for _, r := range t.Routes() {
		for _, p := range r.Pools {
			var addrs []string
			for _, b := range p.Backends {
				addrs = append(addrs, b.Addr)
			}
			lines = append(lines, fmt.Sprintf("%s %s tls=%v %s %s=%d%v", r.Host, r.Path, r.TLS, r.Balance, p.Name(), p.Weight, addrs))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

const web = `{"spec":{"name":"web","services":[{"name":"front","endpoints":[{"service":"front","protocol":"http","host":"Web.Example.com","port":8080,"tls":true}]},
 {"name":"api","health":{"http":"/health","interval":"1s","retries":2},"endpoints":[{"service":"api","protocol":"http","host":"web.example.com","port":9000,"path":"/api"}]},
 {"name":"db","endpoints":[{"service":"db","protocol":"tcp","port":5432}]}]}}`

func TestBuild(t *testing.T) {
	inst := func(ip string, ports ...int) string {
		v := map[string]any{"ip": ip, "status": "running", "health": "healthy"}
		if len(ports) == 2 {
			v["ports"] = []map[string]int{{"host": ports[0], "container": ports[1]}}
		}
		b, _ := json.Marshal(v)
		return string(b)
	}
	tests := []struct {
		name    string
		entries []gossipapi.Entry
		want    string
		errs    int
	}{
		{"host and path routes", []gossipapi.Entry{
			entry("apps/web", web),
			entry("nodes/n1/instances/web/front/0", inst("10.0.0.1", 8080, 80)),
			entry("nodes/n2/instances/web/front/1", inst("10.0.0.2")),
			entry("nodes/n1/instances/web/api/0", inst("10.0.0.3")),
		}, "web.example.com / tls=true round_robin web/front=100[10.0.0.1:80 10.0.0.2:8080]\nweb.example.com /api tls=false round_robin web/api=100[10.0.0.3:9000]", 0},
		{"failed owner and unhealthy instances get no traffic", []gossipapi.Entry{
			entry("apps/web", web),
			{Key: "nodes/n1/instances/web/front/0", Value: json.RawMessage(inst("10.0.0.1")), OwnerFailed: true},
			entry("nodes/n2/instances/web/front/1", `{"ip":"10.0.0.2","status":"running","health":"unhealthy"}`),
			entry("nodes/n3/instances/web/front/2", `{"ip":"10.0.0.4","status":"restarting"}`),
			entry("nodes/n3/instances/web/front/3", `{"ip":"10.0.0.5","status":"running"}`),
		}, "web.example.com / tls=true round_robin web/front=100[10.0.0.5:8080]\nweb.example.com /api tls=false round_robin web/api=100[]", 0},
		{"canary weights and least_conn", []gossipapi.Entry{
			entry("apps/v1", `{"name":"v1","services":[{"name":"web","endpoints":[{"service":"web","host":"c.test","port":80}]}]}`),
			entry("apps/v2", `{"name":"v2","services":[{"name":"web","endpoints":[{"service":"web","host":"c.test","port":80}]}]}`),
			entry("proxy/hosts/c.test", `{"weights":{"v1/web":90,"v2/web":10},"balance":"least_conn"}`),
		}, "c.test / tls=false least_conn v1/web=90[]\nc.test / tls=false least_conn v2/web=10[]", 0},
		{"bad values are skipped and reported", []gossipapi.Entry{
			entry("apps/bad", `{"spec":`),
			entry("apps/badhost", `{"name":"badhost","services":[{"name":"s","endpoints":[{"host":"a b","port":80}]}]}`),
			entry("apps/badport", `{"name":"badport","services":[{"name":"s","endpoints":[{"host":"a.test","port":70000}]}]}`),
			entry("nodes/n1/instances/x/y/0", `[]`),
			entry("nodes/n1/facts", `{}`),
		}, "", 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab, errs := Build(tt.entries, DefaultDefaults(5*time.Second))
			if got := summary(tab); got != tt.want {
				t.Errorf("table:\n%s\nwant:\n%s", got, tt.want)
			}
			if len(errs) != tt.errs {
				t.Errorf("errors %v, want %d", errs, tt.errs)
			}
		})
	}
}

func TestBuild_healthCheckFromService(t *testing.T) {
	tab, _ := Build([]gossipapi.Entry{
		entry("apps/web", web),
		entry("nodes/n1/instances/web/api/0", `{"ip":"10.0.0.3"}`),
		entry("nodes/n1/instances/web/front/0", `{"ip":"10.0.0.1"}`),
	}, DefaultDefaults(5*time.Second))
	api := tab.Lookup("web.example.com", "/api/v1")
	front := tab.Lookup("web.example.com", "/apix")
	if api == nil || front == nil || api.Path != "/api" || front.Path != "/" {
		t.Fatalf("lookup: api %v front %v", api, front)
	}
	c := api.Pools[0].Backends[0].Check
	if c.Kind != CheckHTTP || c.Path != "/health" || c.Interval != time.Second || c.Fall != 2 {
		t.Errorf("api check %+v", c)
	}
	if c := front.Pools[0].Backends[0].Check; c.Kind != CheckTCP || c.Interval != 5*time.Second {
		t.Errorf("front check %+v", c)
	}
}

func TestValidateSettings(t *testing.T) {
	for _, bad := range []string{`{"balance":"random"}`, `{"weights":{"noslash":1}}`, `{"weights":{"a/b":-1}}`, `{"weights":{"a/b/c":1}}`} {
		var s proxyapi.HostSettings
		if err := json.Unmarshal([]byte(bad), &s); err != nil {
			t.Fatal(err)
		}
		if err := ValidateSettings(s); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func FuzzBuild(f *testing.F) {
	f.Add("apps/web", web, "nodes/n/instances/web/front/0", `{"ip":"10.0.0.1","ports":[{"host":8080,"container":80}]}`)
	f.Add("proxy/hosts/a", `{"weights":{"a/b":1}}`, "nodes/n/instances/a/b/x", `{}`)
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		tab, _ := Build([]gossipapi.Entry{{Key: k1, Value: json.RawMessage(v1)}, {Key: k2, Value: json.RawMessage(v2)}}, DefaultDefaults(time.Second))
		for _, r := range tab.Routes() {
			if ValidHost(r.Host) != nil || !strings.HasPrefix(r.Path, "/") {
				t.Fatalf("bad route %+v", r)
			}
		}
	})
}
