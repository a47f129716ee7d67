package httpapi

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"stellar.dev/api"
	"stellar.dev/api/errdefs"
	"stellar.dev/daemon/metrics"
)

func TestMiddleware(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ok", func(w http.ResponseWriter, r *http.Request) { WriteJSON(w, 200, map[string]string{"a": "b"}) })
	mux.HandleFunc("GET /v1/panic", func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	mux.Handle("POST /v1/things", Handle(func(w http.ResponseWriter, r *http.Request) error {
		var v struct {
			Name string `json:"name"`
		}
		if err := DecodeJSON(r, &v); err != nil {
			return err
		}
		WriteJSON(w, 201, v)
		return nil
	}))
	reg := &metrics.Registry{}
	h := Middleware(mux, mux, reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	tests := []struct {
		name, method, path, body, wire string
		status                         int
		code                           string
	}{
		{"ok", "GET", "/v1/ok", "", "", 200, ""},
		{"same wire version", "GET", "/v1/ok", "", "1", 200, ""},
		{"newer wire version refused", "GET", "/v1/ok", "", "2", 400, "unsupported_version"},
		{"panic becomes internal", "GET", "/v1/panic", "", "", 500, "internal"},
		{"unknown field refused", "POST", "/v1/things", `{"name":"a","x":1}`, "", 400, "invalid_argument"},
		{"empty body refused", "POST", "/v1/things", ``, "", 400, "invalid_argument"},
		{"trailing data refused", "POST", "/v1/things", `{"name":"a"} {}`, "", 400, "invalid_argument"},
		{"good body", "POST", "/v1/things", `{"name":"a"}`, "", 201, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body))
			if tt.wire != "" {
				req.Header.Set(api.WireHeader, tt.wire)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			if rec.Header().Get(api.WireHeader) != "1" {
				t.Fatal("response lacks the wire version")
			}
			if tt.code != "" {
				var b errdefs.Body
				if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil || b.Error.Code != tt.code {
					t.Fatalf("body %s, want code %s", rec.Body, tt.code)
				}
			}
		})
	}
	var out strings.Builder
	reg.Write(&out)
	if !strings.Contains(out.String(), `stellar_api_requests_total{method="GET",route="GET /v1/ok",code="200"} 2`) {
		t.Fatalf("requests not counted:\n%s", out.String())
	}
}
