/**
 * Compact value storage for the memory engine.
 *
 * One `Uint8Array` per value costs ~100 bytes of V8 object headers and backing-store
 * bookkeeping on top of the payload, which doubles the footprint of small values. Instead,
 * values are copied into large slab buffers partitioned into fixed-size items per size class
 * (jemalloc-style classes: 8-byte steps up to 128 B, then 8 classes per doubling up to
 * 64 KiB, so internal waste is at most 12.5%). Each stored value is named by a small-integer
 * handle (a V8 Smi, so holding it in a `Map` costs no heap allocation).
 *
 * Space is reclaimed without compaction pauses: freed items go on their class's free list
 * and are reused by the next allocation of that class, so a steady overwrite/delete loop
 * never grows the arena. When a class becomes completely empty its slabs are released.
 */

/** Size of one slab buffer. Small enough that an idle class wastes little, big enough that slab count stays low. */
const SLAB_BYTES = 256 * 1024;
/** Largest value stored in slabs; bigger values get their own buffer (the header overhead is then negligible). */
const MAX_SLAB_ITEM = 64 * 1024;
const EMPTY = new Uint8Array(0);

/** Sorted item sizes of the size classes; class 0 holds empty values and needs no storage. */
const CLASS_SIZES: Uint32Array = buildClassSizes();
/** Class id used for values larger than {@link MAX_SLAB_ITEM}. */
const HUGE_CLASS = CLASS_SIZES.length;
/**
 * Class id of a tombstone: a handle that keeps a version but no bytes. Encoding it in the class
 * byte costs no extra metadata per handle.
 */
const TOMBSTONE_CLASS = HUGE_CLASS + 1;

function buildClassSizes(): Uint32Array {
  const sizes = [0];
  for (let size = 8; size <= 128; size += 8) sizes.push(size);
  for (let base = 128; base < MAX_SLAB_ITEM; base *= 2) {
    const step = base / 8;
    for (let k = 1; k <= 8; k++) sizes.push(base + k * step);
  }
  return Uint32Array.from(sizes);
}

/** Smallest class whose items hold `length` bytes. */
function classFor(length: number): number {
  if (length <= 128) return (length + 7) >>> 3;
  if (length > MAX_SLAB_ITEM) return HUGE_CLASS;
  let lo = 17;
  let hi = CLASS_SIZES.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (CLASS_SIZES[mid]! >= length) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/**
 * The arena's running total of bytes held (slabs, huge values, metadata, free lists), kept by
 * every structure as it grows or shrinks, so the memory cap is checked in O(1) per write.
 */
interface Reserved {
  bytes: number;
}

/** A stack of uint32 that grows by doubling; used for free lists. */
class U32Stack {
  private items = new Uint32Array(16);
  /** Number of items on the stack. */
  size = 0;

  constructor(private readonly reserved: Reserved) {
    reserved.bytes += this.items.byteLength;
  }

  push(value: number): void {
    if (this.size === this.items.length) {
      this.reserved.bytes += this.items.byteLength;
      this.items = grow(this.items, this.size * 2);
    }
    this.items[this.size++] = value;
  }

  /** Pops the top item; callers check `size` first. */
  pop(): number {
    return this.items[--this.size]!;
  }
}

function grow<T extends Uint8Array | Uint32Array>(array: T, length: number): T {
  const next = new (array.constructor as new (length: number) => T)(length);
  next.set(array);
  return next;
}

/** Items of one size, carved out of slabs on demand. */
class SizeClass {
  readonly itemsPerSlab: number;
  private slabs: Uint8Array[] = [];
  private readonly free: U32Stack;
  /** Items ever handed out since the class was last emptied; new items are carved from here. */
  private carved = 0;
  /** Items currently in use. */
  live = 0;

  constructor(
    readonly itemSize: number,
    private readonly reserved: Reserved,
  ) {
    this.itemsPerSlab = itemSize === 0 ? 0 : Math.max(1, Math.floor(SLAB_BYTES / itemSize));
    this.free = new U32Stack(reserved);
  }

  /** Bytes one more item would newly reserve: a slab when no free or carved item is left. */
  get growth(): number {
    if (this.itemSize === 0 || this.free.size > 0) return 0;
    return this.carved < this.slabs.length * this.itemsPerSlab ? 0 : this.slabBytes;
  }

  private get slabBytes(): number {
    return this.itemsPerSlab * this.itemSize;
  }

  allocate(): number {
    this.live++;
    if (this.itemSize === 0) return 0;
    if (this.free.size > 0) return this.free.pop();
    const index = this.carved++;
    if (index >= this.slabs.length * this.itemsPerSlab) {
      this.slabs.push(new Uint8Array(this.slabBytes));
      this.reserved.bytes += this.slabBytes;
    }
    return index;
  }

  release(index: number): void {
    this.live--;
    if (this.itemSize === 0) return;
    if (this.live === 0) {
      // The whole class is empty: hand its slabs back to the GC instead of keeping them for a
      // size that may never be used again (e.g. after a bulk delete of one value shape).
      this.reserved.bytes -= this.slabs.length * this.slabBytes;
      this.slabs = [];
      this.carved = 0;
      this.free.size = 0;
      return;
    }
    this.free.push(index);
  }

  view(index: number, length: number): Uint8Array {
    if (this.itemSize === 0) return EMPTY;
    const slab = this.slabs[Math.floor(index / this.itemsPerSlab)]!;
    const offset = (index % this.itemsPerSlab) * this.itemSize;
    return slab.subarray(offset, offset + length);
  }
}

/** Values bigger than a slab item: one buffer each, indexes recycled through a free list. */
class HugeValues {
  private values: (Uint8Array | undefined)[] = [];
  private readonly free: U32Stack;
  bytes = 0;

  constructor(private readonly reserved: Reserved) {
    this.free = new U32Stack(reserved);
  }

  store(value: Uint8Array): number {
    const copy = value.slice();
    this.bytes += copy.byteLength;
    this.reserved.bytes += copy.byteLength;
    const index = this.free.size > 0 ? this.free.pop() : this.values.length;
    this.values[index] = copy;
    return index;
  }

  release(index: number): void {
    this.bytes -= this.values[index]!.byteLength;
    this.reserved.bytes -= this.values[index]!.byteLength;
    this.values[index] = undefined;
    this.free.push(index);
  }

  view(index: number): Uint8Array {
    return this.values[index]!;
  }
}

/** Space accounting of a {@link SlabArena}. */
export interface SlabArenaStats {
  /** Handles currently allocated (values and tombstones). */
  readonly values: number;
  /** Sum of the lengths of the stored values. */
  readonly liveBytes: number;
  /** Bytes of buffers held by the arena (slabs, huge values, metadata, free lists, eviction order). */
  readonly reservedBytes: number;
}

/**
 * Stores byte strings under integer handles, each with a version (writeEpoch, seq: two uint32),
 * and tombstones (a handle with a version and no bytes). Handles are small non-negative integers
 * that stay valid until {@link SlabArena.free}; views returned by {@link SlabArena.read} alias
 * arena memory and are only valid until the next mutation of the arena.
 */
export class SlabArena {
  private readonly reserved: Reserved = { bytes: 0 };
  private readonly classes: SizeClass[] = Array.from(
    CLASS_SIZES,
    (size) => new SizeClass(size, this.reserved),
  );
  private readonly huge = new HugeValues(this.reserved);
  // Per-handle metadata in parallel typed arrays: 17 bytes per handle, no JS objects. The version
  // lives here rather than in the slab item so that values keep their exact size class and reads
  // stay a plain view of the value bytes.
  private slotClass = new Uint8Array(1024);
  private slotIndex = new Uint32Array(1024);
  private slotLength = new Uint32Array(1024);
  private slotEpoch = new Uint32Array(1024);
  private slotSeq = new Uint32Array(1024);
  private readonly freeSlots = new U32Stack(this.reserved);
  private nextSlot = 0;
  private live = 0;
  private liveBytes = 0;
  /** Eviction order of the values (not tombstones) of each class, when eviction is on. */
  private order: EvictionOrder | undefined;

  constructor(options: { evictionOrder?: boolean } = {}) {
    this.reserved.bytes += this.slotClass.length * SLOT_METADATA_BYTES;
    if (options.evictionOrder === true) {
      this.order = new EvictionOrder(this.slotClass.length);
      this.reserved.bytes += this.order.bytes;
    }
  }

  /** Bytes held (slabs, huge values, metadata, free lists): what the memory cap bounds, in O(1). */
  get reservedBytes(): number {
    return this.reserved.bytes;
  }

  /**
   * Bytes placing a value of `length` would newly reserve: a slab when its class has no free or
   * carved item left, the value itself when huge, and the doubling of the metadata arrays when a
   * new handle is needed (`newHandle`) and none is free.
   */
  growthFor(length: number, newHandle: boolean): number {
    const cls = classFor(length);
    let bytes = cls === HUGE_CLASS ? length : this.classes[cls]!.growth;
    if (newHandle && this.freeSlots.size === 0 && this.nextSlot === this.slotClass.length) {
      bytes +=
        this.slotClass.length * (SLOT_METADATA_BYTES + (this.order === undefined ? 0 : EVICTION_ORDER_BYTES));
    }
    return bytes;
  }

  /**
   * A value to evict so that a value of `length` finds room: one of the same size class (whose
   * item the new value can then take; for huge values any huge one, whose bytes are released),
   * never `exclude`. `lru`: the least recently used (reads and writes count as uses, see
   * {@link SlabArena.touch}); otherwise a random one (sampled; when sampling misses, the oldest
   * written). -1 when the class holds no other value.
   */
  victimFor(length: number, lru: boolean, exclude: number): number {
    const order = this.order;
    if (order === undefined) return -1;
    const cls = classFor(length);
    if (!lru) {
      for (let attempt = 0; attempt < RANDOM_SAMPLES; attempt++) {
        const slot = Math.floor(Math.random() * this.nextSlot);
        if (slot !== exclude && this.slotClass[slot] === cls && order.contains(slot)) return slot;
      }
    }
    return order.oldest(cls, exclude);
  }

  /** Whether a value of `length` can replace the one under `handle` in its own item (no new space). */
  fitsInPlace(handle: number, length: number): boolean {
    const cls = this.slotClass[handle]!;
    return cls !== HUGE_CLASS && cls !== TOMBSTONE_CLASS && classFor(length) === cls;
  }

  /** Marks `handle` as just used (allkeys-lru: a read moves the value to the young end). O(1). */
  touch(handle: number): void {
    if (this.slotClass[handle] !== TOMBSTONE_CLASS) this.order?.touch(handle, this.slotClass[handle]!);
  }

  /** Copies `value` into the arena with its version and returns its handle. */
  allocate(value: Uint8Array, writeEpoch = 0, seq = 0): number {
    const slot = this.takeSlot();
    this.place(slot, value);
    this.setVersion(slot, writeEpoch, seq);
    this.live++;
    return slot;
  }

  /** A new tombstone handle with the given version. */
  allocateTombstone(writeEpoch: number, seq: number): number {
    const slot = this.takeSlot();
    this.placeTombstone(slot);
    this.setVersion(slot, writeEpoch, seq);
    this.live++;
    return slot;
  }

  /**
   * Replaces the bytes (or the tombstone) stored under `handle` and its version. Reuses the item
   * in place when the size class is unchanged, which keeps overwrite-heavy workloads free of
   * allocator churn.
   */
  replace(handle: number, value: Uint8Array, writeEpoch = 0, seq = 0): void {
    this.setVersion(handle, writeEpoch, seq);
    const cls = this.slotClass[handle]!;
    this.liveBytes += value.byteLength - this.slotLength[handle]!;
    if (cls !== HUGE_CLASS && cls !== TOMBSTONE_CLASS && classFor(value.byteLength) === cls) {
      const index = this.slotIndex[handle]!;
      this.classes[cls]!.view(index, value.byteLength).set(value);
      this.slotLength[handle] = value.byteLength;
      this.order?.touch(handle, cls);
      return;
    }
    // Copy into the new item before releasing the old one: `value` may be a view of it.
    const oldIndex = this.slotIndex[handle]!;
    if (cls !== TOMBSTONE_CLASS) this.order?.unlink(handle, cls);
    this.liveBytes -= value.byteLength;
    this.place(handle, value);
    this.releaseItem(cls, oldIndex);
  }

  /** Turns `handle` into a tombstone with the given version, releasing its bytes. */
  replaceWithTombstone(handle: number, writeEpoch: number, seq: number): void {
    const cls = this.slotClass[handle]!;
    const index = this.slotIndex[handle]!;
    this.liveBytes -= this.slotLength[handle]!;
    if (cls !== TOMBSTONE_CLASS) this.order?.unlink(handle, cls);
    this.placeTombstone(handle);
    this.setVersion(handle, writeEpoch, seq);
    this.releaseItem(cls, index);
  }

  /** Whether `handle` is a tombstone. */
  isTombstone(handle: number): boolean {
    return this.slotClass[handle] === TOMBSTONE_CLASS;
  }

  /** writeEpoch of the entry under `handle`. */
  writeEpoch(handle: number): number {
    return this.slotEpoch[handle]!;
  }

  /** seq of the entry under `handle`. */
  seq(handle: number): number {
    return this.slotSeq[handle]!;
  }

  /**
   * The bytes stored under `handle`, as a view into arena memory (valid until the next
   * mutation). An empty view for a tombstone.
   */
  read(handle: number): Uint8Array {
    const cls = this.slotClass[handle]!;
    const index = this.slotIndex[handle]!;
    if (cls === HUGE_CLASS) return this.huge.view(index);
    if (cls === TOMBSTONE_CLASS) return EMPTY;
    return this.classes[cls]!.view(index, this.slotLength[handle]!);
  }

  /** Length in bytes of the value under `handle`. */
  length(handle: number): number {
    return this.slotLength[handle]!;
  }

  /** Releases `handle` and its storage; the handle may be returned by a later allocation. */
  free(handle: number): void {
    this.liveBytes -= this.slotLength[handle]!;
    if (this.slotClass[handle] !== TOMBSTONE_CLASS) this.order?.unlink(handle, this.slotClass[handle]!);
    this.releaseItem(this.slotClass[handle]!, this.slotIndex[handle]!);
    this.freeSlots.push(handle);
    this.live--;
  }

  /** Current space accounting. */
  stats(): SlabArenaStats {
    return { values: this.live, liveBytes: this.liveBytes, reservedBytes: this.reserved.bytes };
  }

  private place(slot: number, value: Uint8Array): void {
    const cls = classFor(value.byteLength);
    let index: number;
    if (cls === HUGE_CLASS) {
      index = this.huge.store(value);
    } else {
      const sizeClass = this.classes[cls]!;
      index = sizeClass.allocate();
      sizeClass.view(index, value.byteLength).set(value);
    }
    this.slotClass[slot] = cls;
    this.slotIndex[slot] = index;
    this.slotLength[slot] = value.byteLength;
    this.liveBytes += value.byteLength;
    this.order?.link(slot, cls);
  }

  private placeTombstone(slot: number): void {
    this.slotClass[slot] = TOMBSTONE_CLASS;
    this.slotIndex[slot] = 0;
    this.slotLength[slot] = 0;
  }

  private setVersion(slot: number, writeEpoch: number, seq: number): void {
    this.slotEpoch[slot] = writeEpoch;
    this.slotSeq[slot] = seq;
  }

  private releaseItem(cls: number, index: number): void {
    if (cls === TOMBSTONE_CLASS) return;
    if (cls === HUGE_CLASS) this.huge.release(index);
    else this.classes[cls]!.release(index);
  }

  private takeSlot(): number {
    if (this.freeSlots.size > 0) return this.freeSlots.pop();
    const slot = this.nextSlot++;
    if (slot === this.slotClass.length) {
      const capacity = slot * 2;
      this.reserved.bytes += slot * SLOT_METADATA_BYTES;
      if (this.order !== undefined) {
        this.reserved.bytes -= this.order.bytes;
        this.order.grow(capacity);
        this.reserved.bytes += this.order.bytes;
      }
      this.slotClass = grow(this.slotClass, capacity);
      this.slotIndex = grow(this.slotIndex, capacity);
      this.slotLength = grow(this.slotLength, capacity);
      this.slotEpoch = grow(this.slotEpoch, capacity);
      this.slotSeq = grow(this.slotSeq, capacity);
    }
    return slot;
  }
}

/** Bytes of metadata per handle: class (1), item index, length, writeEpoch, seq (4 each). */
const SLOT_METADATA_BYTES = 17;
/** Bytes of eviction order per handle: the previous and next handle of its class's list. */
const EVICTION_ORDER_BYTES = 8;
/** Random handles tried by `allkeys-random` before it falls back to the oldest value of the class. */
const RANDOM_SAMPLES = 16;
const NONE = -1;
const UNLINKED = -2;

/**
 * One doubly linked list of handles per size class, in typed arrays (no object per value): young
 * values at the head, the eviction candidate at the tail. Link, unlink and touch are O(1).
 */
class EvictionOrder {
  private prev: Int32Array;
  private next: Int32Array;
  private readonly head = new Int32Array(TOMBSTONE_CLASS).fill(NONE);
  private readonly tail = new Int32Array(TOMBSTONE_CLASS).fill(NONE);

  constructor(capacity: number) {
    this.prev = new Int32Array(capacity).fill(UNLINKED);
    this.next = new Int32Array(capacity).fill(UNLINKED);
  }

  get bytes(): number {
    return this.prev.byteLength + this.next.byteLength + this.head.byteLength + this.tail.byteLength;
  }

  grow(capacity: number): void {
    const prev = new Int32Array(capacity).fill(UNLINKED);
    const next = new Int32Array(capacity).fill(UNLINKED);
    prev.set(this.prev);
    next.set(this.next);
    this.prev = prev;
    this.next = next;
  }

  contains(slot: number): boolean {
    return this.prev[slot] !== UNLINKED;
  }

  link(slot: number, cls: number): void {
    const first = this.head[cls]!;
    this.prev[slot] = NONE;
    this.next[slot] = first;
    if (first === NONE) this.tail[cls] = slot;
    else this.prev[first] = slot;
    this.head[cls] = slot;
  }

  unlink(slot: number, cls: number): void {
    const before = this.prev[slot]!;
    const after = this.next[slot]!;
    if (before === UNLINKED) return;
    if (before === NONE) this.head[cls] = after;
    else this.next[before] = after;
    if (after === NONE) this.tail[cls] = before;
    else this.prev[after] = before;
    this.prev[slot] = UNLINKED;
    this.next[slot] = UNLINKED;
  }

  touch(slot: number, cls: number): void {
    if (this.head[cls] === slot) return;
    this.unlink(slot, cls);
    this.link(slot, cls);
  }

  /** The tail of the class's list, or the one before it when the tail is `exclude`; -1 if none. */
  oldest(cls: number, exclude: number): number {
    const last = this.tail[cls]!;
    return last === exclude && last !== NONE ? this.prev[last]! : last;
  }
}
