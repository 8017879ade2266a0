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

/** A stack of uint32 that grows by doubling; used for free lists. */
class U32Stack {
  private items = new Uint32Array(16);
  /** Number of items on the stack. */
  size = 0;

  push(value: number): void {
    if (this.size === this.items.length) this.items = grow(this.items, this.size * 2);
    this.items[this.size++] = value;
  }

  /** Pops the top item; callers check `size` first. */
  pop(): number {
    return this.items[--this.size]!;
  }

  get bytes(): number {
    return this.items.byteLength;
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
  private readonly free = new U32Stack();
  /** Items ever handed out since the class was last emptied; new items are carved from here. */
  private carved = 0;
  /** Items currently in use. */
  live = 0;

  constructor(readonly itemSize: number) {
    this.itemsPerSlab = itemSize === 0 ? 0 : Math.max(1, Math.floor(SLAB_BYTES / itemSize));
  }

  allocate(): number {
    this.live++;
    if (this.itemSize === 0) return 0;
    if (this.free.size > 0) return this.free.pop();
    const index = this.carved++;
    if (index >= this.slabs.length * this.itemsPerSlab) {
      this.slabs.push(new Uint8Array(this.itemsPerSlab * this.itemSize));
    }
    return index;
  }

  release(index: number): void {
    this.live--;
    if (this.itemSize === 0) return;
    if (this.live === 0) {
      // The whole class is empty: hand its slabs back to the GC instead of keeping them for a
      // size that may never be used again (e.g. after a bulk delete of one value shape).
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

  get reservedBytes(): number {
    return this.slabs.length * this.itemsPerSlab * this.itemSize + this.free.bytes;
  }
}

/** Values bigger than a slab item: one buffer each, indexes recycled through a free list. */
class HugeValues {
  private values: (Uint8Array | undefined)[] = [];
  private readonly free = new U32Stack();
  bytes = 0;

  store(value: Uint8Array): number {
    const copy = value.slice();
    this.bytes += copy.byteLength;
    const index = this.free.size > 0 ? this.free.pop() : this.values.length;
    this.values[index] = copy;
    return index;
  }

  release(index: number): void {
    this.bytes -= this.values[index]!.byteLength;
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
  /** Bytes of buffers held by the arena (slabs, huge values, metadata), i.e. its real footprint. */
  readonly reservedBytes: number;
}

/**
 * Stores byte strings under integer handles, each with a version (writeEpoch, seq: two uint32),
 * and tombstones (a handle with a version and no bytes). Handles are small non-negative integers
 * that stay valid until {@link SlabArena.free}; views returned by {@link SlabArena.read} alias
 * arena memory and are only valid until the next mutation of the arena.
 */
export class SlabArena {
  private readonly classes: SizeClass[] = Array.from(CLASS_SIZES, (size) => new SizeClass(size));
  private readonly huge = new HugeValues();
  // Per-handle metadata in parallel typed arrays: 17 bytes per handle, no JS objects. The version
  // lives here rather than in the slab item so that values keep their exact size class and reads
  // stay a plain view of the value bytes.
  private slotClass = new Uint8Array(1024);
  private slotIndex = new Uint32Array(1024);
  private slotLength = new Uint32Array(1024);
  private slotEpoch = new Uint32Array(1024);
  private slotSeq = new Uint32Array(1024);
  private readonly freeSlots = new U32Stack();
  private nextSlot = 0;
  private live = 0;
  private liveBytes = 0;

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
      return;
    }
    // Copy into the new item before releasing the old one: `value` may be a view of it.
    const oldIndex = this.slotIndex[handle]!;
    this.liveBytes -= value.byteLength;
    this.place(handle, value);
    this.releaseItem(cls, oldIndex);
  }

  /** Turns `handle` into a tombstone with the given version, releasing its bytes. */
  replaceWithTombstone(handle: number, writeEpoch: number, seq: number): void {
    const cls = this.slotClass[handle]!;
    const index = this.slotIndex[handle]!;
    this.liveBytes -= this.slotLength[handle]!;
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
    this.releaseItem(this.slotClass[handle]!, this.slotIndex[handle]!);
    this.freeSlots.push(handle);
    this.live--;
  }

  /** Current space accounting. */
  stats(): SlabArenaStats {
    let reserved = this.huge.bytes + this.freeSlots.bytes;
    reserved += this.slotClass.byteLength + this.slotIndex.byteLength + this.slotLength.byteLength;
    reserved += this.slotEpoch.byteLength + this.slotSeq.byteLength;
    for (const sizeClass of this.classes) reserved += sizeClass.reservedBytes;
    return { values: this.live, liveBytes: this.liveBytes, reservedBytes: reserved };
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
      this.slotClass = grow(this.slotClass, capacity);
      this.slotIndex = grow(this.slotIndex, capacity);
      this.slotLength = grow(this.slotLength, capacity);
      this.slotEpoch = grow(this.slotEpoch, capacity);
      this.slotSeq = grow(this.slotSeq, capacity);
    }
    return slot;
  }
}
