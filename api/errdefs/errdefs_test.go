package errdefs

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
)

func TestRoundTrip_keepsKind(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.code, func(t *testing.T) {
			err := fmt.Errorf("get app web: %w", k.err)
			status, body := ToHTTP(err)
			if status != k.status || body.Error.Code != k.code {
				t.Fatalf("ToHTTP = %d %q, want %d %q", status, body.Error.Code, k.status, k.code)
			}
			back := FromHTTP(status, body)
			if !errors.Is(back, k.err) {
				t.Fatalf("FromHTTP lost the kind: %v", back)
			}
			if back.Error() != err.Error() {
				t.Fatalf("message = %q, want %q", back.Error(), err.Error())
			}
		})
	}
}

func TestToHTTP_unknownIsInternal(t *testing.T) {
	status, body := ToHTTP(errors.New("boom"))
	if status != http.StatusInternalServerError || body.Error.Code != "internal" {
		t.Fatalf("got %d %q", status, body.Error.Code)
	}
}

func TestFromHTTP_fallsBackToStatus(t *testing.T) {
	err := FromHTTP(http.StatusNotFound, Body{})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("want not found, got %v", err)
	}
	if err := FromHTTP(418, Body{}); !errors.Is(err, ErrInternal) {
		t.Fatalf("want internal, got %v", err)
	}
}
