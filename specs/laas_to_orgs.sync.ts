// Scenario 1 of PRODUCT.md: two databases of one product, kept in step instead of a daily cron.
// Users, institutes and their join table; names concatenated; user types mapped to roles with a
// default; status mapped to a boolean; inactive users filtered out.
import { defineSync, sql, env } from 'syncctl';

export default defineSync({
  name: 'laas_to_orgs',
  source: env('LAAS_DATABASE_URL'),
  target: env('ORGS_DATABASE_URL'),
  tables: {
    institutes: {
      from: 'public.institutes',
      to: 'organizations.institute',
      key: ['institute_id'],
      columns: {
        institute_id: sql`id`,
        name: sql`name`,
        image_url: sql`"imageUrl"`,
        updated_at: sql`updated_at`,
      },
    },
    users: {
      from: 'public.users',
      to: 'organizations.user',
      where: sql`is_active AND email IS NOT NULL`,
      key: ['email'],
      columns: {
        email: sql`email`,
        name: sql`concat(first_name, ' ', last_name)`,
        updated_at: sql`updated_at`,
      },
      conflict: { strategy: 'last-write-wins', column: 'updated_at' },
    },
    memberships: {
      from: 'public.institute_user',
      to: 'organizations.institute_users',
      key: ['institute_id', 'user_id'],
      columns: {
        institute_id: sql`institute_id`,
        user_id: sql`user_id`,
        role: sql`CASE user_type WHEN 'TEACHER' THEN 'FACULTY' WHEN 'INSTRUCTOR' THEN 'FACULTY'
                   WHEN 'ADMIN' THEN 'ADMIN' ELSE 'STUDENT' END`,
        is_active: sql`status = 'ACTIVE'`,
      },
      conflict: { strategy: 'manual' },
    },
  },
});
