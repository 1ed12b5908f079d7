// Scenario 4 of PRODUCT.md: two copies of one shop schema whose surrogate ids differ. Rows are
// matched by natural keys: customers by email, products by sku, stock by a composite of three
// columns. `syncctl plan` widens the source replica identity so that updates and deletes carry
// the natural key (a unique index where one fits, REPLICA IDENTITY FULL where none does).
//
//   SHOP_A_DATABASE_URL=... SHOP_B_DATABASE_URL=... syncctl apply examples/natural-keys
import { defineSync, sql, env } from 'syncctl';

export default defineSync({
  name: 'shop_a_to_b',
  source: env('SHOP_A_DATABASE_URL'),
  target: env('SHOP_B_DATABASE_URL'),
  tables: {
    customers: {
      from: 'public.customers',
      to: 'public.customers',
      key: ['email'],
      columns: {
        email: sql`lower(email)`,
        name: sql`name`,
        tier: sql`tier`,
      },
    },
    products: {
      from: 'public.products',
      to: 'public.products',
      where: sql`sku IS NOT NULL`,        // a product without a sku has no identity on the other side
      key: ['sku'],
      columns: {
        sku: sql`sku`,
        title: sql`title`,
        price: sql`price`,
      },
    },
    stock: {
      from: 'public.stock',
      to: 'public.stock',
      key: ['warehouse', 'sku', 'bin'],
      columns: {
        warehouse: sql`warehouse`,
        sku: sql`sku`,
        bin: sql`bin`,
        qty: sql`qty`,
      },
    },
  },
});
