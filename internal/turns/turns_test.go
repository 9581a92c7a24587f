package turns

import "testing"

// Members go to the first-ranked waiter, equals in the order they came;
// an idle member goes to the next waiter at once.
func TestQueue(t *testing.T) {
	var q Queue[string]
	late, first, second, unlisted := q.Take(2), q.Take(0), q.Take(2), q.Take(3)
	for _, v := range []string{"a", "b", "c", "d"} {
		q.Put(v)
	}
	for name, c := range map[string]struct {
		ch   <-chan string
		want string
	}{"rank 0": {first, "a"}, "first of rank 2": {late, "b"}, "second of rank 2": {second, "c"}, "rank 3": {unlisted, "d"}} {
		if got := <-c.ch; got != c.want {
			t.Errorf("%s got %q, want %q", name, got, c.want)
		}
	}
	q.Put("e")
	if got := <-q.Take(5); got != "e" {
		t.Errorf("an idle member: got %q, want e", got)
	}
}

func TestRank(t *testing.T) {
	order := []string{"TestLong", "TestShorter"}
	for test, want := range map[string]int{"TestLong": 0, "TestShorter/sub": 1, "TestOther": 2, "TestLongest": 2} {
		if got := Rank(order, test); got != want {
			t.Errorf("Rank(%q) = %d, want %d", test, got, want)
		}
	}
}
