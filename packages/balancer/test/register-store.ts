import type { RegisterStore } from '@dstore/checker';
import type { DstoreClient } from '@dstore/client';

/**
 * A client as the checker's register store; its appendRead is a transaction of an APPEND then a
 * GET on the key (TRANSACT), so the linearizability checker also proves a transaction is one step:
 * its read shows its own append and nothing taken between the two.
 */
export function registerStore(client: DstoreClient): RegisterStore {
  return {
    getString: (key) => client.getString(key),
    set: (key, value) => client.set(key, value),
    del: (key) => client.del(key),
    append: (key, value) => client.append(key, value),
    appendRead: async (key, value) => {
      const results = await client.transaction(key).append(value).getString().exec();
      if (results === null) throw new Error('a transaction without ifVersion answered null');
      const [appended, read] = results;
      // A step refused on its own: the operation did not do what it says (an append refused with
      // nothing written, its read an effect-free GET).
      if (appended instanceof Error) throw appended;
      if (read instanceof Error) throw read;
      return read;
    },
  };
}
