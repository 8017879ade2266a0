/** Stops one {@link watchAbort} subscription; calling it again does nothing. */
export type StopWatchingAbort = () => void;

/** The callbacks waiting on one signal, in the order they subscribed. */
interface SignalWatchers {
  readonly callbacks: Set<() => void>;
  readonly onAbort: () => void;
}

const watched = new WeakMap<AbortSignal, SignalWatchers>();

/**
 * Calls `callback` once when `signal` aborts, until the returned function stops it.
 *
 * Every subscription to one signal shares **one** 'abort' listener on it: a caller that passes the
 * same AbortSignal to hundreds of commands in flight must not get Node's
 * `MaxListenersExceededWarning` (which fires past 10 listeners on an EventTarget and reads as a
 * leak), and must not pay a listener registration per command. The listener is removed when its
 * last subscription stops, so the signal holds nothing of ours once every command settled.
 */
export function watchAbort(signal: AbortSignal, callback: () => void): StopWatchingAbort {
  let watchers = watched.get(signal);
  if (watchers === undefined) {
    const callbacks = new Set<() => void>();
    const onAbort = (): void => {
      watched.delete(signal);
      // A callback may stop others (settling one command can settle its siblings): call only those
      // still subscribed when their turn comes.
      for (const each of Array.from(callbacks)) {
        if (callbacks.delete(each)) each();
      }
    };
    watchers = { callbacks, onAbort };
    watched.set(signal, watchers);
    signal.addEventListener('abort', onAbort, { once: true });
  }
  const own = watchers;
  // A wrapper per subscription: the same callback may be subscribed twice and stopped once.
  const entry = (): void => callback();
  own.callbacks.add(entry);
  return () => {
    if (!own.callbacks.delete(entry) || own.callbacks.size > 0) return;
    if (watched.get(signal) === own) watched.delete(signal);
    signal.removeEventListener('abort', own.onAbort);
  };
}
