"""Fake Shopify GraphQL Admin API: a strict stand-in for product sync and publishing.

It enforces the contract in ``/work/shared/research/external-apis.md`` (b).
Only ``POST /admin/api/{YYYY-MM}/graphql.json`` exists (MM one of 01/04/07/10,
else 404; the legacy REST routes the original engine used are 404 too), with
``X-Shopify-Access-Token`` equal to the scenario token (else 401
``{"errors": "[API] Invalid API key or access token (...)"}``) and a JSON body
``{query, variables, operationName}``.

The query is really parsed and validated against a schema written below in
SDL (a subset of the Admin API), the way graphql-ruby would: unknown fields
and arguments, unknown input fields (``bodyHtml``, ``images``,
``inventoryQuantity``...), wrong enum values, missing required arguments,
variable type mismatches, unused or undeclared variables, connections without
``first``/``last`` (or above 250), object fields without a selection all come
back as top-level ``errors`` with no ``data``. Answers contain only the
selected fields. Inputs may be passed inline or through ``variables``; using
variables is what the engine should do. Fields added in later API versions are
gated: ``productSet`` needs 2024-04, ``productCreate(product:)`` and
``productUpdate(product:)`` 2024-10, ``productSet(identifier:)`` 2025-04.
``productSet(identifier: {handle})`` upserts: a repeat with the same handle
updates the same product. ``productUpdate`` changes only the fields it is
given and never creates a product (a missing or unknown ``id`` is the
userError ``Product does not exist``).

Business errors are HTTP 200 with ``userErrors`` (``ProductSetUserError`` and
``ProductVariantsBulkCreateUserError`` have ``code``; plain ``UserError``
doesn't): blank title, price not a decimal *string*, option values that
don't match ``productOptions``, options without variants (and vice versa),
more than 2048 variants, a file ``originalSource`` that is not an http(s) URL,
a taken handle, publishing a product that isn't ACTIVE or to an unknown
publication. A staged upload that was never POSTed, or an image above 4472 px
a side / 20 MP, becomes media with ``status: FAILED`` and ``mediaErrors``.
An external ``originalSource`` (any other http(s) URL: Shopify downloads
images from such URLs itself) is fetched when it is on loopback, the only
place the test sandbox can reach (a fake Printify's mockups): a download
that fails or answers >= 400 is ``IMAGE_DOWNLOAD_FAILURE``, bytes that are
no image ``IMAGE_PROCESSING_FAILURE``, and the size limits apply; an
external URL elsewhere is taken as a readable image of unknown size.

Every answer carries ``extensions.cost``. The leaky bucket: a mutation costs
10, a query 1 per object plus ``2 + first x node cost`` per connection; when
the bucket lacks the requested cost the answer is ``errors: [{message:
"Throttled", extensions: {code: "THROTTLED"}}]`` with ``actualQueryCost: null``.

Scenario knobs (``POST /_fake/config`` merges them; ``/_fake/reset`` restores):

    token                    "shpat_test_token_not_real"
    shop_name                "Test Shop"
    shop_domain              "test-shop.myshopify.com"
    publications             Online Store (gid://shopify/Publication/1),
                             Point of Sale (/2), Shop (/3): [{"id", "name"}]
    bucket_max               1000    leaky bucket size (setting it also caps the
                                     current level)
    bucket_available         -       set the current level once
    restore_rate             50      points per second
    throttle_status_code     200     429 to answer throttles with HTTP 429
    media_processing_seconds 0       media stay PROCESSING this long
    fail_next                []      [{"path_contains": "graphql", "operation":
                                     "productSet", "status": 500, "times": 1}];
                                     status 0 drops the connection;
                                     "after_save": true runs the operation
                                     first (the product is saved), then
                                     answers the error instead of its data;
                                     a throttled request doesn't use it up
    error_rate               0       share of GraphQL requests answered 500
                                     (seeded by error_seed, 11); half of such
                                     mutations take effect first
    user_error_next          None    {"mutation": "productSet", "field":
                                     ["input", "title"], "message": "...",
                                     "code": "INVALID_INPUT", "times": 1}
    slow                     None    {"path_contains": "...", "seconds": 3}
    webhook_secret           "shpss_test_webhook_secret"  the app's secret
                                     (X-Shopify-Hmac-Sha256)
    webhook_urls             []      extra callback URLs that receive every
                                     order topic (no subscription needed)
    webhook_repeat           1       each delivery is sent this many times,
                                     same webhook id (Shopify redelivers)
    webhook_retries          3       retries after a non-2xx, an error or a
                                     timeout; pauses 1, 2, 4... s x time_scale
    webhook_timeout_seconds  5       a slower receiver counts as failed
    webhook_api_version      "2025-04"  X-Shopify-API-Version of deliveries
    time_scale               1       scales the pauses between retries

Staged uploads: ``stagedUploadsCreate`` returns targets whose ``url`` is this
fake's ``/_fake_upload/<key>``; POST there as multipart with every parameter
(exact values) before the ``file`` part (201 + XML), or PUT the bytes with the
``Content-Type`` given for PUT targets. Then pass ``resourceUrl`` (not
``url``) as ``originalSource``.

Inventory is Shopify's: a new variant is tracked, with 0 in stock and
``inventoryPolicy: DENY`` unless the input says otherwise
(``inventoryPolicy``, ``inventoryItem: {tracked, sku, requiresShipping,
measurement: {weight: {value, unit}}}``), and ``availableForSale`` is true
only when it is untracked, CONTINUE, or in stock (and the product is ACTIVE):
a print-on-demand listing made with the defaults shows every size "Sold out".
A variant ``productSet`` matches by ``id`` keeps what the input omits.
``Product.tracksInventory`` is any variant tracked, ``totalInventory`` the sum
of ``inventoryQuantity``.

Orders come from the storefront (control routes below) and are read with
``orders(first, after, query, sortKey: OrderSortKeys, reverse)`` (cursors
hold the sort value and id; ``query`` understands created_at, updated_at,
processed_at with >= <= > < or =, name, id, email, sku, status,
financial_status; other terms are ignored and listed in
``extensions.search`` warnings) and ``order(id:)``. An order is PAID, USD,
named ``#1001``, ``#1002``...; a sku that is no variant's becomes a custom
line item (no variant or product, 10.00 unless a price is given). Its one
fulfillment order (OPEN, at ``gid://shopify/Location/1``) holds the line
items with variants. ``fulfillmentCreate(fulfillment: FulfillmentInput!,
message)`` (2024-07 on; ``fulfillmentCreateV2`` too) fulfils the listed
fulfillment order line items, or all remaining when none are listed; it
refuses (userErrors) an unknown fulfillment order, one that is not OPEN or
IN_PROGRESS (``Fulfillment order <id> has an unfulfillable status=
closed.``: a cancelled order's, or one already fulfilled, so a repeat is
refused), a line item not on it, a quantity above what remains, fulfillment
orders of two orders. A partial fulfilment leaves the fulfillment order
IN_PROGRESS, a complete one CLOSED; ``displayFulfillmentStatus`` follows
(UNFULFILLED, PARTIALLY_FULFILLED, FULFILLED). Tracking: company + number(s)
+ url(s); a known carrier's URL is made when none is given.

Webhooks: ``webhookSubscriptionCreate(topic, webhookSubscription:
{callbackUrl, format, includeFields...})`` (https, or http on loopback; the
same topic and URL twice is ``Address for this topic has already been
taken``), ``webhookSubscriptions(first, topics, callbackUrl, format)``,
``webhookSubscription(id)``, ``webhookSubscriptionDelete(id)``. Order changes
deliver orders/create, orders/cancelled, orders/updated (an address change;
and every fulfilment, which also sends orders/fulfilled or
orders/partially_fulfilled, always from a greenlet) to the topic's
subscriptions and
``webhook_urls``: a POST of the REST-shaped order (``id`` int,
``admin_graphql_api_id``, ``line_items`` with ``variant_id``/``product_id``/
``fulfillable_quantity``, ``shipping_address``, ``shipping_lines``,
``customer``, ``fulfillments``...; only ``includeFields`` when set) with
X-Shopify-Topic, -Hmac-Sha256, -Webhook-Id (kept on repeats, retries and
redelivery), -Event-Id, -Shop-Domain, -API-Version, -Triggered-At, sent from a
greenlet (the change answers at once) unless the control body says
``"wait": true``. Only loopback URLs are contacted (others are recorded as
``error``); every attempt is recorded.

Control routes: ``POST /_fake/config``, ``GET /_fake/requests``,
``POST /_fake/reset``, ``GET /_fake/state`` (products with ``createdBy``
api|channel, created_by_api, created_by_channel, throttled, total_requests,
staged_uploads, errors (500s answered), publications, orders (with their fulfillmentOrders and
displayFulfillmentStatus), fulfillments (with notifyCustomer, message,
trackingInfo, lineItems), fulfillments_created, webhook_subscriptions,
webhook_deliveries: ``{topic, url, webhook_id, event_id, attempt, status
(int or "error"), error, seconds}``); the storefront's ``POST /_fake/orders``
``{line_items: [{sku, quantity, price?, title?}], shipping_address?
(REST keys; default Ada Lovelace, 12 Analytical Way, London N1 9GU, GB),
email? ("ada@example.com"), shipping_line? ({code, title, price?}: Standard),
note?, deliver? (true: send webhooks), wait?}`` -> the REST order + ``gid``;
``POST /_fake/orders/<id>/cancel`` ``{reason? (CUSTOMER), deliver?, wait?}``
(400 when already cancelled or fulfilled; fulfillment orders CLOSED);
``POST /_fake/orders/<id>/update`` ``{shipping_address, deliver?, wait?}``
(merged); ``POST /_fake/webhooks/redeliver`` ``{webhook_id, wait?}`` (404
unknown); and ``POST /_fake/channel_products``, which a
sales-channel app (the fake Printify's sync) calls to make a product:
``{title, descriptionHtml, tags, vendor, variants: [{sku, price: "24.99",
options: {Size, Color}, grams}], image_url}`` -> ``{id, legacyResourceId,
handle, onlineStoreUrl}`` (400 ``{error}`` for a malformed body). It needs no
token and is not counted as an API request; the product is ACTIVE on the
Online Store, its options are Size then Color (values in the order first
seen), its variants untracked with ``inventoryPolicy: DENY`` (so buyable) and
the weight in grams, its media (from image_url) READY.
"""

import base64
import collections
import copy
import datetime
import decimal
import hashlib
import hmac
import io
import json
import random
import re
import secrets
import sys
import time
import traceback
import uuid
from urllib.parse import urlsplit

import bottle
import gevent
import requests
from gevent.pool import Group
from PIL import Image

from fakes.control import droppable, control_routes, reply

DEFAULT_SCENARIO = {
    'token': 'shpat_test_token_not_real',
    'shop_name': 'Test Shop',
    'shop_domain': 'test-shop.myshopify.com',
    'publications': [{'id': 'gid://shopify/Publication/1', 'name': 'Online Store'},
                     {'id': 'gid://shopify/Publication/2', 'name': 'Point of Sale'},
                     {'id': 'gid://shopify/Publication/3', 'name': 'Shop'}],
    'bucket_max': 1000,
    'restore_rate': 50,
    'throttle_status_code': 200,
    'media_processing_seconds': 0,
    'fail_next': [],
    'user_error_next': None,
    'slow': None,
    'error_rate': 0,
    'error_seed': 11,
    'webhook_secret': 'shpss_test_webhook_secret',
    'webhook_urls': [],
    'webhook_repeat': 1,
    'webhook_retries': 3,
    'webhook_timeout_seconds': 5,
    'webhook_api_version': '2025-04',
    'time_scale': 1,
}

VERSION = re.compile(r'20\d\d-(01|04|07|10)')
MONEY = re.compile(r'-?\d+(\.\d+)?')
STAGED_HOST = 'https://shopify-staged-uploads.storage.googleapis.com/'
MAX_COST = 1000
MAX_PAGE = 250
MAX_ARRAY = 250
MAX_VARIANTS = 2048
MAX_SIDE, MAX_PIXELS = 4472, 20_000_000
LOOPBACK = ('127.0.0.1', 'localhost', '::1')
# Input lists allowed above MAX_ARRAY (field, argument, input field...).
BIG_LISTS = {('productSet', 'input', 'variants'), ('productVariantsBulkCreate', 'variants')}
INVALID_TOKEN = ('[API] Invalid API key or access token (unrecognized login or wrong '
                 'password)')
MISSING = object()


# Schema ####################################################################

SDL = '''
scalar ID String Int Float Boolean URL DateTime Money Decimal HTML UnsignedInt64 JSON
enum ProductStatus { ACTIVE ARCHIVED DRAFT UNLISTED }
enum FileContentType { IMAGE FILE VIDEO EXTERNAL_VIDEO MODEL_3D }
enum MediaContentType { IMAGE VIDEO EXTERNAL_VIDEO MODEL_3D }
enum MediaStatus { UPLOADED PROCESSING READY FAILED }
enum StagedUploadHttpMethodType { POST PUT }
enum StagedUploadTargetGenerateUploadResource { IMAGE FILE VIDEO MODEL_3D PRODUCT_IMAGE
  COLLECTION_IMAGE SHOP_IMAGE BULK_MUTATION_VARIABLES RETURN_LABEL URL_REDIRECT_IMPORT }
enum ProductVariantsBulkCreateStrategy { DEFAULT PRESERVE_STANDALONE_VARIANT
  REMOVE_STANDALONE_VARIANT }
enum ProductVariantInventoryPolicy { DENY CONTINUE }
enum WeightUnit { GRAMS KILOGRAMS OUNCES POUNDS }
enum ProductOperationStatus { CREATED ACTIVE COMPLETE }
enum ProductSortKeys { ID TITLE VENDOR PRODUCT_TYPE CREATED_AT UPDATED_AT PUBLISHED_AT RELEVANCE }
enum FileCreateInputDuplicateResolutionMode { APPEND_UUID RAISE_ERROR REPLACE }
enum OrderSortKeys { CREATED_AT CURRENT_TOTAL_PRICE CUSTOMER_NAME DESTINATION
  FINANCIAL_STATUS FULFILLMENT_STATUS ID ORDER_NUMBER PO_NUMBER PROCESSED_AT RELEVANCE
  TOTAL_ITEMS_QUANTITY TOTAL_PRICE UPDATED_AT }
enum OrderCancelReason { CUSTOMER DECLINED FRAUD INVENTORY OTHER STAFF }
enum OrderDisplayFinancialStatus { AUTHORIZED EXPIRED PAID PARTIALLY_PAID PARTIALLY_REFUNDED
  PENDING REFUNDED VOIDED }
enum OrderDisplayFulfillmentStatus { FULFILLED IN_PROGRESS ON_HOLD OPEN PARTIALLY_FULFILLED
  PENDING_FULFILLMENT REQUEST_DECLINED RESTOCKED SCHEDULED UNFULFILLED }
enum FulfillmentOrderStatus { CANCELLED CLOSED INCOMPLETE IN_PROGRESS ON_HOLD OPEN SCHEDULED }
enum FulfillmentStatus { CANCELLED ERROR FAILURE OPEN PENDING SUCCESS }
enum CurrencyCode { USD EUR GBP CAD AUD }
enum WebhookSubscriptionFormat { JSON XML }
enum WebhookSubscriptionTopic { APP_UNINSTALLED ORDERS_CREATE ORDERS_UPDATED ORDERS_CANCELLED
  ORDERS_FULFILLED ORDERS_PARTIALLY_FULFILLED ORDERS_PAID ORDERS_DELETE FULFILLMENTS_CREATE
  FULFILLMENTS_UPDATE PRODUCTS_CREATE PRODUCTS_UPDATE PRODUCTS_DELETE }

input ProductSetInput { id: ID title: String descriptionHtml: String handle: String
  vendor: String productType: String tags: [String!] status: ProductStatus
  productOptions: [OptionSetInput!] variants: [ProductVariantSetInput!] files: [FileSetInput!]
  seo: SEOInput giftCard: Boolean templateSuffix: String category: ID collections: [ID!]
  metafields: [MetafieldInput!] redirectNewHandle: Boolean requiresSellingPlan: Boolean }
input ProductSetIdentifiers { id: ID handle: String }
input OptionSetInput { id: ID name: String position: Int values: [OptionValueSetInput!] }
input OptionValueSetInput { id: ID name: String }
input ProductVariantSetInput { id: ID optionValues: [VariantOptionValueInput!]! price: Money
  compareAtPrice: Money sku: String barcode: String file: FileSetInput
  inventoryPolicy: ProductVariantInventoryPolicy inventoryItem: InventoryItemInput
  position: Int taxable: Boolean metafields: [MetafieldInput!] requiresComponents: Boolean }
input VariantOptionValueInput { id: ID name: String optionId: ID optionName: String }
input FileSetInput { id: ID originalSource: String contentType: FileContentType alt: String
  filename: String duplicateResolutionMode: FileCreateInputDuplicateResolutionMode }
input InventoryItemInput { sku: String tracked: Boolean cost: Decimal requiresShipping: Boolean
  harmonizedSystemCode: String countryCodeOfOrigin: String
  measurement: InventoryItemMeasurementInput }
input InventoryItemMeasurementInput { weight: WeightInput }
input WeightInput { value: Float! unit: WeightUnit! }
input ProductUpdateInput { id: ID title: String descriptionHtml: String handle: String
  vendor: String productType: String tags: [String!] status: ProductStatus seo: SEOInput
  category: ID templateSuffix: String requiresSellingPlan: Boolean
  metafields: [MetafieldInput!] }
input SEOInput { title: String description: String }
input MetafieldInput { id: ID namespace: String key: String value: String type: String }
input ProductCreateInput { title: String descriptionHtml: String handle: String vendor: String
  productType: String tags: [String!] status: ProductStatus productOptions: [OptionCreateInput!]
  seo: SEOInput giftCard: Boolean templateSuffix: String category: ID collectionsToJoin: [ID!]
  metafields: [MetafieldInput!] requiresSellingPlan: Boolean }
input ProductInput { id: ID title: String descriptionHtml: String handle: String vendor: String
  productType: String tags: [String!] status: ProductStatus productOptions: [OptionCreateInput!]
  seo: SEOInput giftCard: Boolean templateSuffix: String category: ID collectionsToJoin: [ID!]
  metafields: [MetafieldInput!] requiresSellingPlan: Boolean }
input OptionCreateInput { name: String position: Int values: [OptionValueCreateInput!] }
input OptionValueCreateInput { name: String }
input CreateMediaInput { originalSource: String! mediaContentType: MediaContentType! alt: String }
input ProductVariantsBulkInput { id: ID optionValues: [VariantOptionValueInput!] price: Money
  compareAtPrice: Money barcode: String inventoryItem: InventoryItemInput
  inventoryPolicy: ProductVariantInventoryPolicy mediaSrc: [String!] mediaId: ID
  taxable: Boolean metafields: [MetafieldInput!] }
input ProductDeleteInput { id: ID! }
input StagedUploadInput { filename: String! mimeType: String!
  httpMethod: StagedUploadHttpMethodType = PUT
  resource: StagedUploadTargetGenerateUploadResource! fileSize: UnsignedInt64 }
input PublicationInput { publicationId: ID publishDate: DateTime }
input FulfillmentInput { lineItemsByFulfillmentOrder: [FulfillmentOrderLineItemsInput!]!
  notifyCustomer: Boolean = false originAddress: FulfillmentOriginAddressInput
  trackingInfo: FulfillmentTrackingInput }
input FulfillmentV2Input { lineItemsByFulfillmentOrder: [FulfillmentOrderLineItemsInput!]!
  notifyCustomer: Boolean = false originAddress: FulfillmentOriginAddressInput
  trackingInfo: FulfillmentTrackingInput }
input FulfillmentOrderLineItemsInput { fulfillmentOrderId: ID!
  fulfillmentOrderLineItems: [FulfillmentOrderLineItemInput!] }
input FulfillmentOrderLineItemInput { id: ID! quantity: Int! }
input FulfillmentTrackingInput { company: String number: String numbers: [String!] url: URL
  urls: [URL!] }
input FulfillmentOriginAddressInput { address1: String address2: String city: String
  countryCode: String! provinceCode: String zip: String }
input WebhookSubscriptionInput { callbackUrl: URL format: WebhookSubscriptionFormat
  includeFields: [String!] metafieldNamespaces: [String!] filter: String }

type QueryRoot {
  shop: Shop!
  publications(first: Int, last: Int, after: String, before: String, reverse: Boolean):
    PublicationConnection!
  product(id: ID!): Product
  productByHandle(handle: String!): Product
  products(first: Int, last: Int, after: String, before: String, reverse: Boolean,
    query: String, sortKey: ProductSortKeys): ProductConnection!
  productOperation(id: ID!): ProductOperation
  publicApiVersions: [ApiVersion!]!
  order(id: ID!): Order
  orders(first: Int, last: Int, after: String, before: String, reverse: Boolean,
    query: String, sortKey: OrderSortKeys = ID): OrderConnection!
  fulfillmentOrder(id: ID!): FulfillmentOrder
  webhookSubscription(id: ID!): WebhookSubscription
  webhookSubscriptions(first: Int, last: Int, after: String, before: String, reverse: Boolean,
    topics: [WebhookSubscriptionTopic!], callbackUrl: URL, format: WebhookSubscriptionFormat):
    WebhookSubscriptionConnection!
}
type Mutation {
  productSet(input: ProductSetInput!, synchronous: Boolean = true,
    identifier: ProductSetIdentifiers @since(version: "2025-04")): ProductSetPayload
    @since(version: "2024-04")
  productCreate(product: ProductCreateInput @since(version: "2024-10"), input: ProductInput,
    media: [CreateMediaInput!]): ProductCreatePayload
  productVariantsBulkCreate(productId: ID!, variants: [ProductVariantsBulkInput!]!,
    strategy: ProductVariantsBulkCreateStrategy = DEFAULT, media: [CreateMediaInput!]):
    ProductVariantsBulkCreatePayload
  productUpdate(product: ProductUpdateInput @since(version: "2024-10"),
    media: [CreateMediaInput!]): ProductUpdatePayload
  productDelete(input: ProductDeleteInput!): ProductDeletePayload
  stagedUploadsCreate(input: [StagedUploadInput!]!): StagedUploadsCreatePayload
  publishablePublish(id: ID!, input: [PublicationInput!]!): PublishablePublishPayload
  fulfillmentCreate(fulfillment: FulfillmentInput!, message: String): FulfillmentCreatePayload
    @since(version: "2024-07")
  fulfillmentCreateV2(fulfillment: FulfillmentV2Input!, message: String):
    FulfillmentCreateV2Payload
  webhookSubscriptionCreate(topic: WebhookSubscriptionTopic!,
    webhookSubscription: WebhookSubscriptionInput!): WebhookSubscriptionCreatePayload
  webhookSubscriptionDelete(id: ID!): WebhookSubscriptionDeletePayload
}
type Shop { id: ID! name: String! email: String! myshopifyDomain: String! url: URL!
  currencyCode: String! primaryDomain: Domain! }
type Domain { id: ID! host: String! url: URL! }
type ApiVersion { handle: String! displayName: String! supported: Boolean! }
type Publication { id: ID! name: String! autoPublish: Boolean!
  supportsFuturePublishing: Boolean! catalog: Catalog }
interface Catalog { id: ID! title: String! status: String! }
type AppCatalog implements Catalog { id: ID! title: String! status: String! }
type Count { count: Int! precision: String! }
interface Publishable { availablePublicationsCount: Count publishedOnCurrentPublication: Boolean!
  publishedOnPublication(publicationId: ID!): Boolean! resourcePublicationsCount: Count }
type Product implements Publishable { id: ID! legacyResourceId: UnsignedInt64! title: String!
  handle: String! descriptionHtml: HTML! description: String! vendor: String!
  productType: String! tags: [String!]! status: ProductStatus! createdAt: DateTime!
  updatedAt: DateTime! publishedAt: DateTime onlineStoreUrl: URL onlineStorePreviewUrl: URL
  hasOnlyDefaultVariant: Boolean! totalInventory: Int! tracksInventory: Boolean!
  options(first: Int): [ProductOption!]!
  variants(first: Int, last: Int, after: String, before: String, reverse: Boolean):
    ProductVariantConnection!
  variantsCount: Count
  media(first: Int, last: Int, after: String, before: String, reverse: Boolean):
    MediaConnection!
  mediaCount: Count seo: SEO!
  availablePublicationsCount: Count publishedOnCurrentPublication: Boolean!
  publishedOnPublication(publicationId: ID!): Boolean! resourcePublicationsCount: Count }
type SEO { title: String description: String }
type ProductOption { id: ID! name: String! position: Int! values: [String!]!
  optionValues: [ProductOptionValue!]! }
type ProductOptionValue { id: ID! name: String! hasVariants: Boolean! }
type ProductVariant { id: ID! legacyResourceId: UnsignedInt64! title: String!
  displayName: String! price: Money! compareAtPrice: Money sku: String barcode: String
  position: Int! selectedOptions: [SelectedOption!]!
  inventoryPolicy: ProductVariantInventoryPolicy! inventoryItem: InventoryItem!
  availableForSale: Boolean! inventoryQuantity: Int taxable: Boolean! createdAt: DateTime!
  updatedAt: DateTime! product: Product! }
type SelectedOption { name: String! value: String! }
type InventoryItem { id: ID! sku: String tracked: Boolean! requiresShipping: Boolean!
  measurement: InventoryItemMeasurement! }
type InventoryItemMeasurement { id: ID! weight: Weight }
type Weight { value: Float! unit: WeightUnit! }
interface Media { id: ID! alt: String mediaContentType: MediaContentType!
  status: MediaStatus! mediaErrors: [MediaError!]! preview: MediaPreviewImage }
type MediaImage implements Media { id: ID! alt: String mediaContentType: MediaContentType!
  status: MediaStatus! mediaErrors: [MediaError!]! preview: MediaPreviewImage image: Image }
type MediaError { code: String! details: String message: String! }
type MediaPreviewImage { image: Image status: String! }
type Image { id: ID url: URL! altText: String width: Int height: Int }
type PageInfo { hasNextPage: Boolean! hasPreviousPage: Boolean! startCursor: String
  endCursor: String }
type UserError { field: [String!] message: String! }
type ProductSetUserError { field: [String!] message: String! code: String }
type ProductVariantsBulkCreateUserError { field: [String!] message: String! code: String }
interface ProductOperation { id: ID! product: Product status: ProductOperationStatus! }
type ProductSetOperation implements ProductOperation { id: ID! product: Product
  status: ProductOperationStatus! userErrors: [ProductSetUserError!]! }
type ProductSetPayload { product: Product productSetOperation: ProductSetOperation
  userErrors: [ProductSetUserError!]! }
type ProductCreatePayload { product: Product shop: Shop! userErrors: [UserError!]! }
type ProductVariantsBulkCreatePayload { product: Product productVariants: [ProductVariant!]
  userErrors: [ProductVariantsBulkCreateUserError!]! }
type ProductUpdatePayload { product: Product userErrors: [UserError!]! }
type ProductDeletePayload { deletedProductId: ID shop: Shop! userErrors: [UserError!]! }
type StagedUploadsCreatePayload { stagedTargets: [StagedMediaUploadTarget!]
  userErrors: [UserError!]! }
type StagedMediaUploadTarget { url: URL resourceUrl: URL parameters: [StagedUploadParameter!]! }
type StagedUploadParameter { name: String! value: String! }
type PublishablePublishPayload { publishable: Publishable shop: Shop! userErrors: [UserError!]! }
type MoneyV2 { amount: Decimal! currencyCode: CurrencyCode! }
type MoneyBag { shopMoney: MoneyV2! presentmentMoney: MoneyV2! }
type MailingAddress { id: ID! firstName: String lastName: String name: String
  address1: String address2: String city: String province: String provinceCode: String
  zip: String country: String countryCodeV2: String phone: String company: String
  formatted: [String!]! }
type ShippingLine { id: ID code: String title: String! source: String
  originalPriceSet: MoneyBag! }
type Customer { id: ID! email: String firstName: String lastName: String displayName: String! }
type Order { id: ID! legacyResourceId: UnsignedInt64! name: String! email: String
  phone: String note: String tags: [String!]! test: Boolean! createdAt: DateTime!
  updatedAt: DateTime! processedAt: DateTime! cancelledAt: DateTime
  cancelReason: OrderCancelReason closed: Boolean! closedAt: DateTime
  displayFinancialStatus: OrderDisplayFinancialStatus
  displayFulfillmentStatus: OrderDisplayFulfillmentStatus! fullyPaid: Boolean!
  currencyCode: CurrencyCode! totalPriceSet: MoneyBag! subtotalPriceSet: MoneyBag
  shippingAddress: MailingAddress shippingLine: ShippingLine customer: Customer
  lineItems(first: Int, last: Int, after: String, before: String, reverse: Boolean):
    LineItemConnection!
  fulfillmentOrders(first: Int, last: Int, after: String, before: String, reverse: Boolean,
    displayable: Boolean, query: String): FulfillmentOrderConnection!
  fulfillments(first: Int): [Fulfillment!]! }
type LineItem { id: ID! sku: String quantity: Int! currentQuantity: Int! name: String!
  title: String! variantTitle: String vendor: String requiresShipping: Boolean!
  fulfillableQuantity: Int! unfulfilledQuantity: Int! originalUnitPriceSet: MoneyBag!
  variant: ProductVariant product: Product }
type Location { id: ID! name: String! }
type FulfillmentOrderAssignedLocation { name: String! location: Location }
type FulfillmentOrder { id: ID! status: FulfillmentOrderStatus! orderId: ID! orderName: String!
  createdAt: DateTime! updatedAt: DateTime! assignedLocation: FulfillmentOrderAssignedLocation!
  order: Order!
  lineItems(first: Int, last: Int, after: String, before: String, reverse: Boolean):
    FulfillmentOrderLineItemConnection! }
type FulfillmentOrderLineItem { id: ID! remainingQuantity: Int! totalQuantity: Int!
  sku: String productTitle: String! variantTitle: String lineItem: LineItem! }
type FulfillmentTrackingInfo { company: String number: String url: URL }
type Fulfillment { id: ID! legacyResourceId: UnsignedInt64! name: String!
  status: FulfillmentStatus! createdAt: DateTime! updatedAt: DateTime! order: Order!
  trackingInfo(first: Int): [FulfillmentTrackingInfo!]!
  fulfillmentLineItems(first: Int, last: Int, after: String, before: String, reverse: Boolean):
    FulfillmentLineItemConnection! }
type FulfillmentLineItem { id: ID! quantity: Int lineItem: LineItem! }
type FulfillmentCreatePayload { fulfillment: Fulfillment userErrors: [UserError!]! }
type FulfillmentCreateV2Payload { fulfillment: Fulfillment userErrors: [UserError!]! }
interface WebhookSubscriptionEndpoint { }
type WebhookHttpEndpoint implements WebhookSubscriptionEndpoint { callbackUrl: URL! }
type WebhookSubscription { id: ID! legacyResourceId: UnsignedInt64!
  topic: WebhookSubscriptionTopic! format: WebhookSubscriptionFormat!
  includeFields: [String!]! metafieldNamespaces: [String!]! filter: String
  createdAt: DateTime! updatedAt: DateTime! callbackUrl: URL!
  endpoint: WebhookSubscriptionEndpoint! }
type WebhookSubscriptionCreatePayload { webhookSubscription: WebhookSubscription
  userErrors: [UserError!]! }
type WebhookSubscriptionDeletePayload { deletedWebhookSubscriptionId: ID
  userErrors: [UserError!]! }
''' + ''.join(f'''
type {node}Connection {{ edges: [{node}Edge!]! nodes: [{node}!]! pageInfo: PageInfo! }}
type {node}Edge {{ cursor: String! node: {node}! }}
''' for node in ('Publication', 'Product', 'ProductVariant', 'Media', 'Order', 'LineItem',
                 'FulfillmentOrder', 'FulfillmentOrderLineItem', 'FulfillmentLineItem',
                 'WebhookSubscription'))

PAYLOAD_TYPES = {'productSet': ('ProductSetPayload', 'ProductSetUserError'),
                 'productCreate': ('ProductCreatePayload', 'UserError'),
                 'productVariantsBulkCreate': ('ProductVariantsBulkCreatePayload',
                                               'ProductVariantsBulkCreateUserError'),
                 'productUpdate': ('ProductUpdatePayload', 'UserError'),
                 'productDelete': ('ProductDeletePayload', 'UserError'),
                 'stagedUploadsCreate': ('StagedUploadsCreatePayload', 'UserError'),
                 'publishablePublish': ('PublishablePublishPayload', 'UserError'),
                 'fulfillmentCreate': ('FulfillmentCreatePayload', 'UserError'),
                 'fulfillmentCreateV2': ('FulfillmentCreateV2Payload', 'UserError'),
                 'webhookSubscriptionCreate': ('WebhookSubscriptionCreatePayload', 'UserError'),
                 'webhookSubscriptionDelete': ('WebhookSubscriptionDeletePayload', 'UserError')}


# GraphQL: tokens and parsing ###############################################

class GraphQLError(Exception):
    """A top-level GraphQL error: ``{"message", "extensions"?, ...}``."""

    def __init__(self, message, **extra):
        super().__init__(message)
        self.payload = {'message': message, **extra}


TOKEN = re.compile(r'''
    (?P<skip>[\s,\ufeff]+|\#[^\n\r]*)
  | (?P<block>"""(?:\\"""|(?!""").)*""")
  | (?P<string>"(?:\\.|[^"\\\n\r])*")
  | (?P<punct>\.\.\.|[!$&():=@\[\]{}|])
  | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
  | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
''', re.X | re.S)


def location(text, pos):
    line = text.count('\n', 0, pos) + 1
    return line, pos - (text.rfind('\n', 0, pos) + 1) + 1


def tokenize(text):
    """[(kind, value, offset)]; strings decoded, numbers converted."""
    tokens, pos = [], 0
    while pos < len(text):
        match = TOKEN.match(text, pos)
        if not match:
            line, col = location(text, pos)
            raise GraphQLError(f'Parse error on "{text[pos]}" at [{line}, {col}]',
                               locations=[{'line': line, 'column': col}])
        kind, raw = match.lastgroup, match.group()
        if kind != 'skip':
            tokens.append((kind, token_value(kind, raw), pos))
        pos = match.end()
    return tokens


def token_value(kind, raw):
    if kind == 'string':
        return json.loads(raw)
    if kind == 'block':
        return raw[3:-3].replace('\\"""', '"""').strip()
    if kind == 'number':
        return float(raw) if any(c in raw for c in '.eE') else int(raw)
    return raw


class Parser:
    """Recursive descent over GraphQL documents (and the SDL subset above)."""

    def __init__(self, text):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self):
        if self.i < len(self.tokens):
            return self.tokens[self.i]
        return ('eof', None, len(self.text))

    def at(self, value):
        kind, token, _ = self.peek()
        return kind in ('punct', 'name') and token == value

    def take(self):
        token = self.peek()
        if token[0] == 'eof':
            self.fail('unexpected end of document')
        self.i += 1
        return token

    def expect(self, value):
        if not self.at(value):
            self.fail(f'expected "{value}"')
        return self.take()

    def name(self):
        if self.peek()[0] != 'name':
            self.fail('expected a name')
        return self.take()[1]

    def fail(self, what):
        kind, token, pos = self.peek()
        line, col = location(self.text, pos)
        shown = 'end of file' if kind == 'eof' else f'"{token}"'
        raise GraphQLError(f'Parse error on {shown} ({what}) at [{line}, {col}]',
                           locations=[{'line': line, 'column': col}])

    # Executable documents ------------------------------------------------

    def document(self):
        operations, fragments = [], {}
        while self.peek()[0] != 'eof':
            if self.at('fragment'):
                self.take()
                name = self.name()
                self.expect('on')
                on = self.name()
                self.directives()
                fragments[name] = {'on': on, 'selections': self.selection_set()}
            elif self.at('{'):
                operations.append({'type': 'query', 'name': None, 'vars': {},
                                   'selections': self.selection_set()})
            elif self.at('query') or self.at('mutation') or self.at('subscription'):
                operations.append(self.operation())
            else:
                self.fail('expected an operation or fragment')
        if not operations:
            raise GraphQLError('No operations in query document')
        return {'operations': operations, 'fragments': fragments}

    def operation(self):
        op_type = self.take()[1]
        name = self.name() if self.peek()[0] == 'name' else None
        variables = self.variable_defs() if self.at('(') else {}
        self.directives()
        return {'type': op_type, 'name': name, 'vars': variables,
                'selections': self.selection_set()}

    def variable_defs(self):
        self.expect('(')
        out = {}
        while not self.at(')'):
            self.expect('$')
            name = self.name()
            self.expect(':')
            out[name] = {'type': self.type_ref(), 'default': self.default()}
            self.directives()
        self.take()
        return out

    def default(self):
        if not self.at('='):
            return MISSING
        self.take()
        return self.value(const=True)

    def type_ref(self):
        if self.at('['):
            self.take()
            ref = ('list', self.type_ref())
            self.expect(']')
        else:
            ref = ('named', self.name())
        if self.at('!'):
            self.take()
            ref = ('nonnull', ref)
        return ref

    def selection_set(self):
        self.expect('{')
        selections = []
        while not self.at('}'):
            selections.append(self.selection())
        self.take()
        if not selections:
            self.fail('empty selection set')
        return selections

    def selection(self):
        if self.at('...'):
            return self.fragment_selection()
        alias, name = None, self.name()
        if self.at(':'):
            self.take()
            alias, name = name, self.name()
        args = self.arguments() if self.at('(') else {}
        self.directives()
        selections = self.selection_set() if self.at('{') else None
        return {'kind': 'field', 'alias': alias, 'name': name, 'args': args,
                'selections': selections}

    def fragment_selection(self):
        self.take()
        if self.at('on'):
            self.take()
            on = self.name()
            self.directives()
            return {'kind': 'inline', 'on': on, 'selections': self.selection_set()}
        if self.at('{') or self.at('@'):
            self.directives()
            return {'kind': 'inline', 'on': None, 'selections': self.selection_set()}
        name = self.name()
        self.directives()
        return {'kind': 'spread', 'name': name}

    def arguments(self):
        self.expect('(')
        out = {}
        while not self.at(')'):
            name = self.name()
            self.expect(':')
            out[name] = self.value()
        self.take()
        return out

    def directives(self):
        found = {}
        while self.at('@'):
            self.take()
            name = self.name()
            found[name] = self.arguments() if self.at('(') else {}
        return found

    def value(self, const=False):
        kind, token, _ = self.peek()
        if self.at('$') and not const:
            self.take()
            return ('var', self.name())
        if self.at('['):
            return ('list', self.delimited(']', lambda: self.value(const)))
        if self.at('{'):
            return ('object', dict(self.delimited('}', lambda: self.object_field(const))))
        if kind in ('number', 'string', 'block'):
            self.take()
            return ('const', token)
        if kind == 'name':
            self.take()
            words = {'true': True, 'false': False, 'null': None}
            return ('const', words[token]) if token in words else ('enum', token)
        return self.fail('expected a value')

    def delimited(self, closer, item):
        self.take()
        items = []
        while not self.at(closer):
            items.append(item())
        self.take()
        return items

    def object_field(self, const):
        name = self.name()
        self.expect(':')
        return name, self.value(const)

    # SDL subset ----------------------------------------------------------

    def sdl(self, schema):
        while self.peek()[0] != 'eof':
            keyword = self.name()
            if keyword == 'scalar':
                while self.peek()[0] == 'name' and self.peek()[1] not in SDL_KEYWORDS:
                    schema.kinds[self.name()] = 'scalar'
            elif keyword == 'enum':
                name = self.name()
                schema.kinds[name] = 'enum'
                schema.enums[name] = self.delimited('}', self.name)
            else:
                self.sdl_type(schema, keyword)

    def sdl_type(self, schema, keyword):
        name = self.name()
        schema.implements[name] = []
        if self.at('implements'):
            self.take()
            schema.implements[name].append(self.name())
            while self.at('&'):
                self.take()
                schema.implements[name].append(self.name())
        schema.kinds[name] = {'type': 'object', 'interface': 'interface',
                              'input': 'input'}[keyword]
        schema.fields[name] = dict(self.delimited('}', self.sdl_field))

    def sdl_field(self):
        name = self.name()
        args = dict(self.delimited(')', self.sdl_field)) if self.at('(') else {}
        self.expect(':')
        ref = self.type_ref()
        default = self.default()
        since = self.directives().get('since', {}).get('version', ('const', None))[1]
        return name, {'type': ref, 'args': args, 'default': default, 'since': since}


SDL_KEYWORDS = ('scalar', 'enum', 'type', 'interface', 'input')


# GraphQL: schema, types and input coercion #################################

def named(ref):
    while ref[0] != 'named':
        ref = ref[1]
    return ref[1]


def type_str(ref):
    if ref[0] == 'nonnull':
        return type_str(ref[1]) + '!'
    if ref[0] == 'list':
        return f'[{type_str(ref[1])}]'
    return ref[1]


class CoerceError(Exception):
    def __init__(self, path, explanation):
        super().__init__(explanation)
        self.path = list(path)
        self.explanation = explanation


SCALARS = {
    'Int': lambda v: v if isinstance(v, int) and not isinstance(v, bool)
    and -2**31 <= v < 2**31 else MISSING,
    'Float': lambda v: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool)
    else MISSING,
    'Boolean': lambda v: v if isinstance(v, bool) else MISSING,
    'ID': lambda v: str(v) if isinstance(v, str) or (isinstance(v, int)
                                                    and not isinstance(v, bool)) else MISSING,
    'UnsignedInt64': lambda v: str(v) if (isinstance(v, int) and not isinstance(v, bool)
                                          and v >= 0) or (isinstance(v, str) and v.isdigit())
    else MISSING,
    # Money/Decimal pass through: a non-string price is a userError, checked later.
    'Money': lambda v: v if isinstance(v, (str, int, float)) and not isinstance(v, bool)
    else MISSING,
    'Decimal': lambda v: v if isinstance(v, (str, int, float)) and not isinstance(v, bool)
    else MISSING,
    'JSON': lambda v: v,
}


class Schema:
    """Types parsed from the SDL subset, plus input coercion and version gating."""

    def __init__(self, sdl):
        self.kinds, self.enums, self.fields, self.implements = {}, {}, {}, {}
        Parser(sdl).sdl(self)

    def field(self, type_name, name, version):
        fdef = self.fields.get(type_name, {}).get(name)
        return fdef if fdef and available(fdef, version) else None

    def is_leaf(self, type_name):
        return self.kinds.get(type_name) in ('scalar', 'enum')

    def applies(self, condition, type_name):
        """Can a fragment on ``condition`` apply inside ``type_name``?"""
        return (condition == type_name or condition in self.implements.get(type_name, ())
                or type_name in self.implements.get(condition, ()))

    def coerce(self, value, ref, path=()):
        """A JSON value checked against an input type; raises CoerceError."""
        if ref[0] == 'nonnull':
            if value is None:
                raise CoerceError(path, 'Expected value to not be null')
            return self.coerce(value, ref[1], path)
        if value is None:
            return None
        if ref[0] == 'list':
            items = value if isinstance(value, list) else [value]
            return [self.coerce(item, ref[1], (*path, n)) for n, item in enumerate(items)]
        kind = self.kinds[ref[1]]
        if kind == 'input':
            return self.coerce_object(value, ref[1], path)
        if kind == 'enum':
            if value not in self.enums[ref[1]]:
                raise CoerceError(path, f'Expected "{value}" to be one of: '
                                        + ', '.join(self.enums[ref[1]]))
            return value
        result = SCALARS.get(ref[1], lambda v: v if isinstance(v, str) else MISSING)(value)
        if result is MISSING:
            raise CoerceError(path, f'Could not coerce value {json.dumps(value)} to {ref[1]}')
        return result

    def coerce_object(self, value, type_name, path):
        if not isinstance(value, dict):
            raise CoerceError(path, f'Expected {json.dumps(value)} to be a key-value object')
        fields = self.fields[type_name]
        for key in value:
            if key not in fields:
                raise CoerceError((*path, key), f'Field is not defined on {type_name}')
        out = {}
        for key, fdef in fields.items():
            if key in value:
                out[key] = self.coerce(value[key], fdef['type'], (*path, key))
            elif fdef['default'] is not MISSING:
                out[key] = self.coerce(literal(fdef['default'], {}), fdef['type'], (*path, key))
            elif fdef['type'][0] == 'nonnull':
                raise CoerceError((*path, key), 'Expected value to not be null')
        return out


def available(definition, version):
    return not definition.get('since') or version >= definition['since']


def literal(value, variables):
    """A value AST as plain JSON, with variables substituted (absent ones -> MISSING)."""
    kind, data = value
    if kind == 'var':
        return variables.get(data, MISSING)
    if kind == 'list':
        return [literal(item, variables) for item in data]
    if kind == 'object':
        pairs = ((k, literal(v, variables)) for k, v in data.items())
        return {k: v for k, v in pairs if v is not MISSING}
    return data


def compatible(var_ref, loc_ref, has_default):
    """GraphQL's variable-usage rule (a default allows a nullable variable)."""
    if loc_ref[0] == 'nonnull' and var_ref[0] != 'nonnull':
        if not has_default:
            return False
        loc_ref = loc_ref[1]
    return same_type(var_ref, loc_ref)


def same_type(var_ref, loc_ref):
    if loc_ref[0] == 'nonnull':
        return var_ref[0] == 'nonnull' and same_type(var_ref[1], loc_ref[1])
    if var_ref[0] == 'nonnull':
        return same_type(var_ref[1], loc_ref)
    if loc_ref[0] == 'list' or var_ref[0] == 'list':
        return loc_ref[0] == var_ref[0] == 'list' and same_type(var_ref[1], loc_ref[1])
    return var_ref[1] == loc_ref[1]


# GraphQL: validation, planning (arguments, cost), execution ################

class Operation:
    """One parsed operation checked against the schema and ready to execute."""

    def __init__(self, schema, document, operation, version):
        self.schema = schema
        self.fragments = document['fragments']
        self.op = operation
        self.version = version
        self.root = 'Mutation' if operation['type'] == 'mutation' else 'QueryRoot'
        self.errors = []
        self.used = set()
        self.variables = {}

    @property
    def label(self):
        return self.op['name'] or f'anonymous {self.op["type"]}'

    def error(self, message, **extra):
        self.errors.append({'message': message, **extra})

    # Static validation ---------------------------------------------------

    def validate(self):
        if self.op['type'] == 'subscription':
            self.error('Subscriptions are not supported by the Admin API')
            return self.errors
        for name, vdef in self.op['vars'].items():
            if self.schema.kinds.get(named(vdef['type'])) not in ('scalar', 'enum', 'input'):
                self.error(f'{type_str(vdef["type"])} isn\'t a valid input type (on ${name})')
        self.check_selections(self.op['selections'], self.root, ())
        for name in self.op['vars']:
            if name not in self.used:
                self.error(f'Variable ${name} is declared by {self.label} but not used')
        return self.errors

    def check_selections(self, selections, type_name, seen):
        for sel in selections:
            if sel['kind'] == 'field':
                self.check_field(sel, type_name, seen)
            else:
                self.check_fragment(sel, type_name, seen)

    def check_fragment(self, sel, type_name, seen):
        if sel['kind'] == 'spread':
            if sel['name'] in seen:
                return self.error(f'Fragment {sel["name"]} contains an infinite loop')
            fragment = self.fragments.get(sel['name'])
            if fragment is None:
                return self.error(f'Fragment {sel["name"]} was used, but not defined')
            condition, selections, seen = fragment['on'], fragment['selections'], (
                *seen, sel['name'])
        else:
            condition, selections = sel['on'] or type_name, sel['selections']
        if condition not in self.schema.kinds:
            return self.error(f"No such type {condition}, so it can't be a fragment condition")
        if not self.schema.applies(condition, type_name):
            return self.error(f"Fragment on {condition} can't be spread inside {type_name}")
        self.check_selections(selections, condition, seen)

    def check_field(self, sel, type_name, seen):
        name = sel['name']
        if name == '__typename':
            return
        fdef = self.schema.field(type_name, name, self.version)
        if fdef is None:
            return self.error(f"Field '{name}' doesn't exist on type '{type_name}'",
                              extensions={'code': 'undefinedField', 'typeName': type_name,
                                          'fieldName': name})
        self.check_arguments(sel, fdef)
        target = named(fdef['type'])
        if self.schema.is_leaf(target) and sel['selections']:
            self.error(f"Selections can't be made on scalars (field '{name}' returns {target} "
                       'but has selections)')
        elif not self.schema.is_leaf(target) and not sel['selections']:
            self.error(f"Field must have selections (field '{name}' returns {target} but has "
                       f"no selections. Did you mean '{name} {{ ... }}'?)")
        elif sel['selections']:
            self.check_selections(sel['selections'], target, seen)

    def check_arguments(self, sel, fdef):
        name = sel['name']
        for arg, value in sel['args'].items():
            adef = fdef['args'].get(arg)
            if adef is None or not available(adef, self.version):
                self.error(f"Field '{name}' doesn't accept argument '{arg}'")
            else:
                self.check_usage(value, adef['type'], arg)
        missing = [arg for arg, adef in fdef['args'].items()
                   if adef['type'][0] == 'nonnull' and adef['default'] is MISSING
                   and arg not in sel['args']]
        if missing:
            self.error(f"Field '{name}' is missing required arguments: {', '.join(missing)}")
        if named(fdef['type']).endswith('Connection') and not {'first', 'last'} & set(
                sel['args']):
            self.error(f'you must provide one of first or last (on {name})')

    def check_usage(self, value, ref, arg):
        """Record variables used in ``value`` and check their declared types."""
        kind, data = value
        if kind == 'var':
            self.used.add(data)
            vdef = self.op['vars'].get(data)
            if vdef is None:
                return self.error(f'Variable ${data} is used by {self.label} but not declared')
            if not compatible(vdef['type'], ref, vdef['default'] is not MISSING):
                return self.error(self.mismatch(data, vdef['type'], ref, arg))
        elif kind == 'list':
            inner = ref[1] if ref[0] == 'nonnull' else ref
            for item in data:
                self.check_usage(item, inner[1] if inner[0] == 'list' else inner, arg)
        elif kind == 'object':
            fields = self.schema.fields.get(named(ref), {})
            for key, item in data.items():
                if key in fields:
                    self.check_usage(item, fields[key]['type'], key)

    @staticmethod
    def mismatch(var, var_ref, loc_ref, arg):
        kind = 'Nullability' if named(var_ref) == named(loc_ref) else 'Type'
        return (f'{kind} mismatch on variable ${var} and argument {arg} '
                f'({type_str(var_ref)} / {type_str(loc_ref)})')

    # Planning: variables, arguments, limits, cost ------------------------

    def coerce_variables(self, provided):
        for name, vdef in self.op['vars'].items():
            if name in provided:
                value = provided[name]
            elif vdef['default'] is not MISSING:
                value = literal(vdef['default'], {})
            elif vdef['type'][0] == 'nonnull':
                value = None
            else:
                continue
            try:
                self.variables[name] = self.schema.coerce(value, vdef['type'])
            except CoerceError as exc:
                self.error(variable_message(name, vdef['type'], exc),
                           extensions={'value': value, 'problems': [
                               {'path': exc.path, 'explanation': exc.explanation}]})
        return self.errors

    def plan(self):
        """Coerce every field's arguments and return the requested cost."""
        cost = self.selection_cost(self.op['selections'], self.root, ())
        if self.root == 'Mutation':
            cost = 10 * sum(1 for sel in self.op['selections'] if sel['kind'] == 'field'
                            and sel['name'] != '__typename')
        return cost

    def selection_cost(self, selections, type_name, path):
        total = 0
        for sel, condition in self.fields_in(selections, type_name):
            total += self.field_cost(sel, condition, path)
        return total

    def fields_in(self, selections, type_name):
        """(field selection, parent type) pairs, looking through fragments."""
        for sel in selections:
            if sel['kind'] == 'field':
                yield sel, type_name
            else:
                fragment = self.fragments[sel['name']] if sel['kind'] == 'spread' else sel
                condition = fragment.get('on') or type_name
                yield from self.fields_in(fragment['selections'], condition)

    def field_cost(self, sel, type_name, path):
        if sel['name'] == '__typename':
            return 0
        fdef = self.schema.field(type_name, sel['name'], self.version)
        sel['_args'] = self.field_arguments(sel, fdef, (*path, sel['name']))
        target = named(fdef['type'])
        if self.schema.is_leaf(target):
            return 0
        if not target.endswith('Connection'):
            return 1 + self.selection_cost(sel['selections'], target, (*path, sel['name']))
        size = sel['_args'].get('first') or sel['_args'].get('last') or 0
        if size > MAX_PAGE or size < 0:
            self.error(f'Invalid value {size} for first/last on {sel["name"]}: the maximum '
                       f'page size is {MAX_PAGE}', extensions={'code': 'BAD_REQUEST'})
        node = self.node_cost(sel['selections'], target, (*path, sel['name']))
        return 2 + size * node

    def node_cost(self, selections, connection, path):
        node_type = connection[:-len('Connection')]
        best = 0
        for sel, _ in self.fields_in(selections, connection):
            if sel['name'] == 'nodes':
                best = max(best, 1 + self.selection_cost(sel['selections'], node_type, path))
            elif sel['name'] == 'edges':
                for inner, _ in self.fields_in(sel['selections'], connection[:-10] + 'Edge'):
                    if inner['name'] == 'node':
                        best = max(best, 1 + self.selection_cost(inner['selections'],
                                                                 node_type, path))
            else:
                self.selection_cost([sel], connection, path)
        return best

    def field_arguments(self, sel, fdef, path):
        args = {}
        for arg, adef in fdef['args'].items():
            raw = literal(sel['args'][arg], self.variables) if arg in sel['args'] else MISSING
            if raw is MISSING and adef['default'] is not MISSING:
                raw = literal(adef['default'], {})
            if raw is MISSING:
                continue
            try:
                args[arg] = self.schema.coerce(raw, adef['type'])
            except CoerceError as exc:
                self.error(f"Argument '{arg}' on Field '{sel['name']}' has an invalid value "
                           f"({json.dumps(raw)}). Expected type '{type_str(adef['type'])}'.",
                           extensions={'problems': [{'path': exc.path,
                                                     'explanation': exc.explanation}]})
                continue
            self.check_sizes(args[arg], (*path, arg))
        return args

    def check_sizes(self, value, path):
        if isinstance(value, dict):
            for key, item in value.items():
                self.check_sizes(item, (*path, key))
        elif isinstance(value, list):
            named_path = tuple(p for p in path if isinstance(p, str))
            if len(value) > MAX_ARRAY and named_path[-3:] not in BIG_LISTS \
                    and named_path[-2:] not in BIG_LISTS:
                self.error(f'The input array size of {len(value)} is greater than the maximum '
                           f'allowed of {MAX_ARRAY}.', path=list(path),
                           extensions={'code': 'MAX_INPUT_SIZE_EXCEEDED'})
            for n, item in enumerate(value):
                self.check_sizes(item, (*path, n))

    # Execution -----------------------------------------------------------

    def root_fields(self):
        return [sel['name'] for sel, _ in self.fields_in(self.op['selections'], self.root)]

    def execute(self, resolve):
        """Run the root fields in order through ``resolve(name, args)``."""
        data = {}
        for key, group in self.collect(self.op['selections'], self.root).items():
            first = group[0]
            if first['name'] == '__typename':
                data[key] = self.root
                continue
            value = resolve(first['name'], first.get('_args', {}))
            data[key] = self.project(value, [s for g in group for s in g['selections'] or []])
        return data

    def collect(self, selections, type_name):
        """Response key -> field selections, for an object of runtime type ``type_name``."""
        out = collections.OrderedDict()
        for sel in selections:
            if sel['kind'] == 'field':
                out.setdefault(sel['alias'] or sel['name'], []).append(sel)
                continue
            fragment = self.fragments[sel['name']] if sel['kind'] == 'spread' else sel
            condition = fragment.get('on')
            if condition is None or condition == type_name or condition in \
                    self.schema.implements.get(type_name, ()):
                for key, group in self.collect(fragment['selections'], type_name).items():
                    out.setdefault(key, []).extend(group)
        return out

    def project(self, value, selections):
        """Keep only the selected fields of a resolved value."""
        if value is None or not selections:
            return value
        if isinstance(value, list):
            return [self.project(item, selections) for item in value]
        out = {}
        for key, group in self.collect(selections, value['__typename']).items():
            first = group[0]
            if first['name'] == '__typename':
                out[key] = value['__typename']
                continue
            field = value.get(first['name'])
            if callable(field):
                field = field(first.get('_args', {}))
            out[key] = self.project(field, [s for g in group for s in g['selections'] or []])
        return out


def variable_message(name, ref, exc):
    where = (' for ' + '.'.join(str(p) for p in exc.path)) if exc.path else ''
    return f'Variable ${name} of type {type_str(ref)} was provided invalid value{where}'


def pick_operation(document, name):
    operations = document['operations']
    if name:
        for operation in operations:
            if operation['name'] == name:
                return operation
        raise GraphQLError(f'No operation named "{name}"')
    if len(operations) > 1:
        raise GraphQLError('An operation name is required')
    return operations[0]


# Views: internal records -> GraphQL objects ################################

def obj(typename, **fields):
    return {'__typename': typename, **fields}


def connection(items, node_type):
    """A resolver for a Relay connection over ``items`` (first/last/after/before)."""
    def resolve(args):
        indexed = list(enumerate(items))
        if args.get('reverse'):
            indexed.reverse()
        if args.get('after') is not None:
            indexed = [p for p in indexed if p[0] > cursor_index(args['after'])]
        if args.get('before') is not None:
            indexed = [p for p in indexed if p[0] < cursor_index(args['before'])]
        total = len(indexed)
        if args.get('first') is not None:
            indexed = indexed[:args['first']]
        elif args.get('last') is not None:
            indexed = indexed[max(0, total - args['last']):]
        edges = [obj(f'{node_type}Edge', cursor=cursor(n), node=item) for n, item in indexed]
        return obj(f'{node_type}Connection', edges=edges, nodes=[item for _, item in indexed],
                   pageInfo=obj('PageInfo', hasNextPage=len(indexed) < total
                                and args.get('first') is not None,
                                hasPreviousPage=len(indexed) < total
                                and args.get('last') is not None,
                                startCursor=edges[0]['cursor'] if edges else None,
                                endCursor=edges[-1]['cursor'] if edges else None))
    return resolve


def cursor(index):
    return base64.b64encode(json.dumps({'last_id': index}).encode()).decode()


def cursor_index(value):
    try:
        return int(json.loads(base64.b64decode(value))['last_id'])
    except (ValueError, KeyError, TypeError):
        raise GraphQLError(f'Invalid cursor {value!r}') from None


def count(n):
    return obj('Count', count=n, precision='EXACT')


def slug(text):
    return re.sub(r'[^a-z0-9]+', '-', (text or '').lower()).strip('-') or 'product'


def iso_now():
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())


def money_problem(value, key):
    """Why a Money input is unacceptable, or None (it must be a decimal string)."""
    if not isinstance(value, str) or not MONEY.fullmatch(value.strip()):
        return (f'{key} must be a decimal string such as "19.99", not '
                f'{json.dumps(value)}', 'INVALID')
    if decimal.Decimal(value) < 0:
        return f'{key} must be greater than or equal to 0', 'GREATER_THAN_OR_EQUAL_TO'
    return None


def image_facts(data):
    """(width, height) of image bytes, or None when they are not an image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            return image.width, image.height
    except Exception:  # Pillow raises many types for bad data
        return None


# Orders, fulfilment and webhooks ###########################################

DEFAULT_ADDRESS = {'first_name': 'Ada', 'last_name': 'Lovelace', 'address1': '12 Analytical Way',
                   'address2': '', 'city': 'London', 'province': '', 'province_code': '',
                   'zip': 'N1 9GU', 'country_code': 'GB', 'phone': '+44 20 7946 0000',
                   'company': ''}
COUNTRIES = {'GB': 'United Kingdom', 'US': 'United States', 'CA': 'Canada', 'AU': 'Australia',
             'DE': 'Germany', 'FR': 'France', 'NL': 'Netherlands', 'IE': 'Ireland',
             'ES': 'Spain', 'IT': 'Italy'}
CARRIER_URLS = {'UPS': 'https://www.ups.com/WebTracking?loc=en_US&requester=ST&trackNums={}',
                'USPS': 'https://tools.usps.com/go/TrackConfirmAction?tLabels={}',
                'FedEx': 'https://www.fedex.com/fedextrack/?trknbr={}',
                'DHL Express': 'https://www.dhl.com/en/express/tracking.html?AWB={}&brand=DHL',
                'Royal Mail': 'https://www.royalmail.com/track-your-item#/tracking-results/{}'}
# The topics an order change delivers (``webhook_urls`` receive all of them).
ORDER_TOPICS = ('ORDERS_CREATE', 'ORDERS_UPDATED', 'ORDERS_CANCELLED', 'ORDERS_FULFILLED',
                'ORDERS_PARTIALLY_FULFILLED')
ORDER_SORT = {'CREATED_AT': 'createdAt', 'PROCESSED_AT': 'createdAt', 'UPDATED_AT': 'updatedAt',
              'ORDER_NUMBER': 'number'}
ORDER_SEARCH = re.compile(r'''(-?)(\w+):(>=|<=|>|<|=)?("[^"]*"|'[^']*'|\S+)''')
FULFILLABLE = ('OPEN', 'IN_PROGRESS')
LOCATION_ID = 'gid://shopify/Location/1'


def rest_topic(topic):
    """ORDERS_PARTIALLY_FULFILLED -> orders/partially_fulfilled (the header's form)."""
    return topic.lower().replace('_', '/', 1)


def iso_millis():
    now = time.time()
    return time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now)) + f'.{int(now % 1 * 1000):03d}Z'


def webhook_signature(body, secret):
    """X-Shopify-Hmac-Sha256: base64 of HMAC-SHA256 over the raw body."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def parse_when(text):
    """An aware datetime for a search value (date or ISO time), or None."""
    text = text.strip('\'"')
    try:
        when = datetime.datetime.fromisoformat(text.replace('Z', '+00:00'))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)


def compared(left, op, right):
    return {'>=': left >= right, '<=': left <= right, '>': left > right, '<': left < right,
            '=': left == right, '': left == right}[op]


def money(value):
    return f'{decimal.Decimal(value):.2f}'


def money_bag(amount):
    shop = obj('MoneyV2', amount=amount, currencyCode='USD')
    return obj('MoneyBag', shopMoney=shop, presentmentMoney=shop)


def order_body(data):
    """Check a /_fake/orders body; ValueError (-> 400) when malformed."""
    if not isinstance(data, dict):
        raise ValueError('the body must be a JSON object')
    items = data.get('line_items')
    if not isinstance(items, list) or not items:
        raise ValueError('line_items must be a non-empty list of {sku, quantity}')
    for n, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get('sku'), str) \
                or not item['sku'].strip():
            raise ValueError(f'line_items[{n}] needs a sku')
        quantity = item.get('quantity', 1)
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            raise ValueError(f'line_items[{n}].quantity must be a positive integer')
        if item.get('price') is not None and money_problem(item['price'], 'price'):
            raise ValueError(f'line_items[{n}].price must be a decimal string')
    address_body(data.get('shipping_address'))
    if data.get('shipping_line') is not None and not isinstance(data['shipping_line'], dict):
        raise ValueError('shipping_line must be an object {code, title, price?}')
    return items


def address_body(address):
    if address is None:
        return {}
    if not isinstance(address, dict):
        raise ValueError('shipping_address must be an object')
    unknown = set(address) - set(DEFAULT_ADDRESS) - {'country', 'name'}
    if unknown:
        raise ValueError(f'unknown shipping_address keys: {sorted(unknown)}')
    return address


def rest_address(address):
    """A stored (REST-keyed) address with the derived name and country."""
    out = {**DEFAULT_ADDRESS, **address}
    out['name'] = f'{out["first_name"]} {out["last_name"]}'.strip()
    out['country'] = address.get('country') or COUNTRIES.get(out['country_code'],
                                                             out['country_code'])
    out['province'] = out.get('province') or ''
    return out


def order_search(query):
    """(checks, warnings): a predicate per understood ``orders(query:)`` term."""
    checks, warnings = [], []
    for negate, key, op, value in ORDER_SEARCH.findall(query or ''):
        check = order_term(key.lower(), op or '', value.strip('\'"'))
        if check is None:
            warnings.append({'field': key, 'message': 'Invalid search field for this query.'})
        else:
            checks.append((lambda c: lambda o: not c(o))(check) if negate else check)
    return checks, warnings


def order_term(key, op, value):
    """A predicate over an order record for one search term, or None."""
    if key in ('created_at', 'updated_at', 'processed_at'):
        when = parse_when(value)
        field = 'updatedAt' if key == 'updated_at' else 'createdAt'
        return None if when is None else (
            lambda o: compared(parse_when(o[field]), op, when))
    if key == 'name':
        return lambda o: o['name'].lstrip('#') == value.lstrip('#')
    if key == 'id' and value.isdigit():
        return lambda o: compared(o['num'], op, int(value))
    if key == 'email':
        return lambda o: (o['email'] or '').lower() == value.lower()
    if key == 'sku':
        return lambda o: any(li['sku'] == value for li in o['lineItems'])
    if key == 'status':
        return {'open': lambda o: not o['closedAt'], 'closed': lambda o: bool(o['closedAt']),
                'cancelled': lambda o: bool(o['cancelledAt']),
                'any': lambda o: True}.get(value.lower())
    if key == 'financial_status':
        return lambda o: value.lower() in ('paid', 'any')
    return None


def keyed_connection(records, node_type, sort_value, view, args):
    """A connection whose cursors hold the sort value and id, like Shopify's,
    so paging stays right while records change between pages."""
    def position(record):
        return (sort_value(record), record['num'])
    rows = sorted(records, key=position, reverse=bool(args.get('reverse')))
    later = (lambda a, b: a < b) if args.get('reverse') else (lambda a, b: a > b)
    try:
        if args.get('after') is not None:
            mark = keyed_cursor_position(args['after'])
            rows = [r for r in rows if later(list(position(r)), mark)]
        if args.get('before') is not None:
            mark = keyed_cursor_position(args['before'])
            rows = [r for r in rows if later(mark, list(position(r)))]
    except TypeError:   # a cursor made under another sortKey
        raise GraphQLError('Invalid cursor for this sortKey') from None
    total = len(rows)
    if args.get('first') is not None:
        rows = rows[:args['first']]
    elif args.get('last') is not None:
        rows = rows[max(0, total - args['last']):]
    edges = [obj(f'{node_type}Edge', cursor=keyed_cursor(position(r)), node=view(r))
             for r in rows]
    return obj(f'{node_type}Connection', edges=edges, nodes=[e['node'] for e in edges],
               pageInfo=obj('PageInfo', hasNextPage=len(rows) < total
                            and args.get('first') is not None,
                            hasPreviousPage=len(rows) < total and args.get('last') is not None,
                            startCursor=edges[0]['cursor'] if edges else None,
                            endCursor=edges[-1]['cursor'] if edges else None))


def keyed_cursor(position):
    value, number = position
    return base64.b64encode(json.dumps({'last_id': number, 'last_value': value}).encode()
                            ).decode()


def keyed_cursor_position(value):
    try:
        data = json.loads(base64.b64decode(value))
        return [data['last_value'], int(data['last_id'])]
    except (ValueError, KeyError, TypeError):
        raise GraphQLError(f'Invalid cursor {value!r}') from None


def tracking_infos(tracking):
    """[{company, number, url}] from a FulfillmentTrackingInput (number(s), url(s))."""
    tracking = tracking or {}
    numbers = ([tracking['number']] if tracking.get('number') else []) + list(
        tracking.get('numbers') or [])
    urls = ([tracking['url']] if tracking.get('url') else []) + list(tracking.get('urls') or [])
    company = tracking.get('company')
    if not numbers:
        return [{'company': company, 'number': None, 'url': urls[0] if urls else None}] \
            if company or urls else []
    template = CARRIER_URLS.get(company or '')
    return [{'company': company, 'number': number,
             'url': urls[n] if n < len(urls) else (template.format(number) if template
                                                   else None)}
            for n, number in enumerate(numbers)]


class OrderDesk:
    """Orders made by the storefront (control routes), their fulfilment orders
    and fulfilments, and webhook subscriptions and deliveries (a mixin of
    ShopifyFake: it uses its scenario, counts, next_id and views)."""

    def reset_orders(self):
        if getattr(self, 'senders', None) is not None:
            self.senders.kill(block=False)
        self.senders = Group()                      # greenlets delivering webhooks
        self.orders = collections.OrderedDict()     # gid -> order record
        self.fulfillment_orders = {}                # gid -> fulfillment order record
        self.fulfillments = collections.OrderedDict()   # gid -> fulfillment record
        self.customers = {}                         # email -> customer number
        self.webhook_subscriptions = collections.OrderedDict()  # gid -> subscription
        self.webhooks = {}                          # webhook id -> delivery (for redelivery)
        self.webhook_deliveries = []                # every attempt, oldest first
        self.order_number = 1000
        self.counts.update(fulfillments_created=0)

    def orders_state(self):
        return {'orders': [self.state_order(o) for o in self.orders.values()],
                'fulfillments': copy.deepcopy(list(self.fulfillments.values())),
                'webhook_subscriptions': copy.deepcopy(list(self.webhook_subscriptions.values())),
                'webhook_deliveries': copy.deepcopy(self.webhook_deliveries)}

    def state_order(self, order):
        out = copy.deepcopy(order)
        out['fulfillmentOrders'] = [copy.deepcopy(self.fulfillment_orders[f])
                                    for f in order['fulfillmentOrders']]
        out['displayFulfillmentStatus'] = self.fulfillment_status(order)
        return out

    # The storefront (control routes) ------------------------------------

    def create_order(self, data):
        """An order as a storefront sale makes it; ValueError for a bad body."""
        items = order_body(data)
        number, now = self.next_id(), iso_now()
        self.order_number += 1
        email = data.get('email') or 'ada@example.com'
        line = data.get('shipping_line') or {}
        order = {'num': number, 'id': f'gid://shopify/Order/{number}',
                 'number': self.order_number, 'name': f'#{self.order_number}', 'email': email,
                 'createdAt': now, 'updatedAt': now, 'cancelledAt': None, 'cancelReason': None,
                 'closedAt': None, 'note': data.get('note'),
                 'address': rest_address(address_body(data.get('shipping_address'))),
                 'shippingLine': {'code': line.get('code') or 'Standard',
                                  'title': line.get('title') or 'Standard',
                                  'price': money(line.get('price') or '0.00')},
                 'lineItems': [self.new_line_item(item) for item in items],
                 'fulfillmentOrders': [], 'fulfillments': [],
                 'customerId': self.customers.setdefault(email, self.next_id())}
        self.orders[order['id']] = order
        self.open_fulfillment_order(order)
        if data.get('deliver', True):
            self.notify('ORDERS_CREATE', order, data.get('wait'))
        return {**self.order_payload(order), 'gid': order['id']}

    def new_line_item(self, item):
        number = self.next_id()
        found = self.variant_by_sku(item['sku'])
        base = {'num': number, 'id': f'gid://shopify/LineItem/{number}', 'sku': item['sku'],
                'quantity': item.get('quantity', 1), 'requiresShipping': True}
        if found is None:   # a sale of something else: a custom line item
            title = item.get('title') or item['sku']
            return {**base, 'title': title, 'name': title, 'variantTitle': None,
                    'vendor': None, 'price': money(item.get('price') or '10.00'),
                    'variantId': None, 'productId': None, 'variantNum': None,
                    'productNum': None}
        product, variant = found
        name = product['title'] if variant['title'] == 'Default Title' else \
            f'{product["title"]} - {variant["title"]}'
        return {**base, 'title': product['title'], 'name': name,
                'variantTitle': variant['title'], 'vendor': product['vendor'],
                'price': money(item.get('price') or variant['price']),
                'variantId': variant['id'], 'productId': product['id'],
                'variantNum': variant['num'], 'productNum': product['num']}

    def variant_by_sku(self, sku):
        for product in self.products.values():
            for variant in product['variants']:
                if variant['sku'] == sku:
                    return product, variant
        return None

    def open_fulfillment_order(self, order):
        """One OPEN fulfillment order at Location/1 with every line item that has a variant."""
        items = [li for li in order['lineItems'] if li['variantId']]
        if not items:
            return
        number = self.next_id()
        fo = {'num': number, 'id': f'gid://shopify/FulfillmentOrder/{number}',
              'orderId': order['id'], 'status': 'OPEN', 'createdAt': order['createdAt'],
              'updatedAt': order['createdAt'], 'assignedLocation': LOCATION_ID, 'lineItems': []}
        for li in items:
            line_number = self.next_id()
            fo['lineItems'].append({'num': line_number,
                                    'id': f'gid://shopify/FulfillmentOrderLineItem/{line_number}',
                                    'lineItemId': li['id'], 'totalQuantity': li['quantity'],
                                    'remainingQuantity': li['quantity']})
        self.fulfillment_orders[fo['id']] = fo
        order['fulfillmentOrders'].append(fo['id'])

    def order_by_number(self, number):
        order = self.orders.get(f'gid://shopify/Order/{number}')
        if order is None:
            raise LookupError(f'no order {number}')
        return order

    def cancel_order(self, number, data):
        """Cancel (and archive) an order; ValueError when Shopify would refuse."""
        order = self.order_by_number(number)
        if order['cancelledAt']:
            raise ValueError('Order has already been cancelled.')
        if order['fulfillments']:
            raise ValueError('Cannot cancel an order that has fulfillments; cancel them first.')
        reason = (data.get('reason') or 'CUSTOMER').upper()
        if reason not in self.schema.enums['OrderCancelReason']:
            raise ValueError(f'reason must be one of {self.schema.enums["OrderCancelReason"]}')
        now = iso_now()
        order.update(cancelledAt=now, cancelReason=reason, closedAt=now, updatedAt=now)
        for fo_id in order['fulfillmentOrders']:
            self.fulfillment_orders[fo_id].update(status='CLOSED', updatedAt=now)
        if data.get('deliver', True):
            self.notify('ORDERS_CANCELLED', order, data.get('wait'))
        return {**self.order_payload(order), 'gid': order['id']}

    def update_order(self, number, data):
        order = self.order_by_number(number)
        if not isinstance(data, dict) or not isinstance(data.get('shipping_address'), dict):
            raise ValueError('the body needs a shipping_address object')
        changed = {**{k: v for k, v in order['address'].items() if k not in ('name', 'country')},
                   **address_body(data['shipping_address'])}
        order['address'] = rest_address(changed)
        order['updatedAt'] = iso_now()
        if data.get('deliver', True):
            self.notify('ORDERS_UPDATED', order, data.get('wait'))
        return {**self.order_payload(order), 'gid': order['id']}

    # Quantities and statuses --------------------------------------------

    def fulfilled_quantity(self, line_item_id):
        return sum(entry['quantity'] for f in self.fulfillments.values()
                   for entry in f['lineItems'] if entry['lineItemId'] == line_item_id)

    def fulfillment_status(self, order):
        """UNFULFILLED, PARTIALLY_FULFILLED or FULFILLED, over the items to ship."""
        items = [fl for fo in order['fulfillmentOrders']
                 for fl in self.fulfillment_orders[fo]['lineItems']]
        done = sum(self.fulfilled_quantity(fl['lineItemId']) for fl in items)
        if items and done >= sum(fl['totalQuantity'] for fl in items):
            return 'FULFILLED'
        return 'PARTIALLY_FULFILLED' if done else 'UNFULFILLED'

    def line_item_state(self, order, li):
        """(fulfilled, still fulfillable) quantities of one line item."""
        done = self.fulfilled_quantity(li['id'])
        return done, 0 if order['cancelledAt'] else li['quantity'] - done

    # REST webhook payload ------------------------------------------------

    def order_payload(self, order):
        """The order as Shopify's REST webhooks (orders/create...) send it."""
        status = {'FULFILLED': 'fulfilled', 'PARTIALLY_FULFILLED': 'partial'}.get(
            self.fulfillment_status(order))
        subtotal = sum(decimal.Decimal(li['price']) * li['quantity'] for li in order['lineItems'])
        total = subtotal + decimal.Decimal(order['shippingLine']['price'])
        address = order['address']
        return {
            'id': order['num'], 'admin_graphql_api_id': order['id'], 'name': order['name'],
            'order_number': order['number'], 'number': order['number'] - 1000,
            'email': order['email'], 'contact_email': order['email'],
            'created_at': order['createdAt'], 'updated_at': order['updatedAt'],
            'processed_at': order['createdAt'], 'cancelled_at': order['cancelledAt'],
            'cancel_reason': order['cancelReason'].lower() if order['cancelReason'] else None,
            'closed_at': order['closedAt'], 'financial_status': 'paid',
            'fulfillment_status': status, 'currency': 'USD', 'presentment_currency': 'USD',
            'subtotal_price': money(subtotal), 'total_price': money(total), 'total_tax': '0.00',
            'test': False, 'note': order['note'], 'tags': '',
            'line_items': [self.rest_line_item(order, li) for li in order['lineItems']],
            'shipping_address': {k: address.get(k) for k in (
                'first_name', 'last_name', 'name', 'address1', 'address2', 'city', 'province',
                'province_code', 'zip', 'country', 'country_code', 'phone', 'company')},
            'shipping_lines': [{'code': order['shippingLine']['code'],
                                'title': order['shippingLine']['title'],
                                'price': order['shippingLine']['price'], 'source': 'shopify'}],
            'fulfillments': [self.rest_fulfillment(self.fulfillments[f])
                             for f in order['fulfillments']],
            'customer': {'id': order['customerId'], 'email': order['email'],
                         'first_name': address['first_name'],
                         'last_name': address['last_name']}}

    def rest_line_item(self, order, li):
        done, fulfillable = self.line_item_state(order, li)
        return {'id': li['num'], 'admin_graphql_api_id': li['id'], 'variant_id': li['variantNum'],
                'product_id': li['productNum'], 'sku': li['sku'], 'quantity': li['quantity'],
                'current_quantity': li['quantity'], 'title': li['title'],
                'variant_title': li['variantTitle'], 'name': li['name'], 'vendor': li['vendor'],
                'price': li['price'], 'fulfillable_quantity': fulfillable,
                'fulfillment_status': None if not done else 'fulfilled'
                if done >= li['quantity'] else 'partial',
                'requires_shipping': li['requiresShipping'], 'gift_card': False,
                'taxable': True}

    def rest_fulfillment(self, fulfillment):
        infos = fulfillment['trackingInfo']
        return {'id': fulfillment['num'], 'admin_graphql_api_id': fulfillment['id'],
                'name': fulfillment['name'], 'status': fulfillment['status'].lower(),
                'created_at': fulfillment['createdAt'],
                'tracking_company': infos[0]['company'] if infos else None,
                'tracking_numbers': [i['number'] for i in infos if i['number']],
                'tracking_urls': [i['url'] for i in infos if i['url']]}

    # GraphQL views -------------------------------------------------------

    def order_view(self, order):
        address = order['address']
        status = self.fulfillment_status(order)
        subtotal = sum(decimal.Decimal(li['price']) * li['quantity'] for li in order['lineItems'])
        total = subtotal + decimal.Decimal(order['shippingLine']['price'])
        line_items = [self.line_item_view(order, li) for li in order['lineItems']]
        fulfillment_orders = [self.fulfillment_order_view(self.fulfillment_orders[f])
                              for f in order['fulfillmentOrders']]
        return obj(
            'Order', id=order['id'], legacyResourceId=str(order['num']), name=order['name'],
            email=order['email'], phone=address['phone'], note=order['note'], tags=[],
            test=False, createdAt=order['createdAt'], updatedAt=order['updatedAt'],
            processedAt=order['createdAt'], cancelledAt=order['cancelledAt'],
            cancelReason=order['cancelReason'], closed=bool(order['closedAt']),
            closedAt=order['closedAt'], displayFinancialStatus='PAID',
            displayFulfillmentStatus=status, fullyPaid=True, currencyCode='USD',
            totalPriceSet=money_bag(money(total)), subtotalPriceSet=money_bag(money(subtotal)),
            shippingAddress=self.address_view(order),
            shippingLine=obj('ShippingLine', id=f'gid://shopify/ShippingLine/{order["num"]}',
                             code=order['shippingLine']['code'],
                             title=order['shippingLine']['title'], source='shopify',
                             originalPriceSet=money_bag(order['shippingLine']['price'])),
            customer=obj('Customer', id=f'gid://shopify/Customer/{order["customerId"]}',
                         email=order['email'], firstName=address['first_name'],
                         lastName=address['last_name'], displayName=address['name']),
            lineItems=connection(line_items, 'LineItem'),
            fulfillmentOrders=connection(fulfillment_orders, 'FulfillmentOrder'),
            fulfillments=lambda args: [self.fulfillment_view(self.fulfillments[f])
                                       for f in order['fulfillments']][:args.get('first')])

    def address_view(self, order):
        a = order['address']
        return obj('MailingAddress', id=f'gid://shopify/MailingAddress/{order["num"]}',
                   firstName=a['first_name'], lastName=a['last_name'], name=a['name'],
                   address1=a['address1'], address2=a['address2'] or None, city=a['city'],
                   province=a['province'] or None, provinceCode=a['province_code'] or None,
                   zip=a['zip'], country=a['country'], countryCodeV2=a['country_code'],
                   phone=a['phone'], company=a['company'] or None,
                   formatted=[part for part in (a['company'], a['address1'], a['address2'],
                                                f'{a["city"]} {a["zip"]}'.strip(),
                                                a['country']) if part])

    def line_item_view(self, order, li):
        done, fulfillable = self.line_item_state(order, li)
        product = self.products.get(li['productId']) if li['productId'] else None
        variant = next((v for v in product['variants'] if v['id'] == li['variantId']),
                       None) if product else None
        return obj('LineItem', id=li['id'], sku=li['sku'], quantity=li['quantity'],
                   currentQuantity=li['quantity'], name=li['name'], title=li['title'],
                   variantTitle=li['variantTitle'], vendor=li['vendor'],
                   requiresShipping=li['requiresShipping'], fulfillableQuantity=fulfillable,
                   unfulfilledQuantity=li['quantity'] - done,
                   originalUnitPriceSet=money_bag(li['price']),
                   variant=self.variant_view(product, variant) if variant else None,
                   product=(lambda args: self.product_view(product)) if product else None)

    def fulfillment_order_view(self, fo):
        order = self.orders[fo['orderId']]
        items = {li['id']: li for li in order['lineItems']}
        lines = [obj('FulfillmentOrderLineItem', id=fl['id'],
                     remainingQuantity=fl['remainingQuantity'],
                     totalQuantity=fl['totalQuantity'], sku=items[fl['lineItemId']]['sku'],
                     productTitle=items[fl['lineItemId']]['title'],
                     variantTitle=items[fl['lineItemId']]['variantTitle'],
                     lineItem=self.line_item_view(order, items[fl['lineItemId']]))
                 for fl in fo['lineItems']]
        return obj('FulfillmentOrder', id=fo['id'], status=fo['status'], orderId=order['id'],
                   orderName=order['name'], createdAt=fo['createdAt'], updatedAt=fo['updatedAt'],
                   assignedLocation=obj('FulfillmentOrderAssignedLocation', name='Shop location',
                                        location=obj('Location', id=fo['assignedLocation'],
                                                     name='Shop location')),
                   order=lambda args: self.order_view(order),
                   lineItems=connection(lines, 'FulfillmentOrderLineItem'))

    def fulfillment_view(self, fulfillment):
        order = self.orders[fulfillment['orderId']]
        items = {li['id']: li for li in order['lineItems']}
        lines = [obj('FulfillmentLineItem', id=entry['id'], quantity=entry['quantity'],
                     lineItem=self.line_item_view(order, items[entry['lineItemId']]))
                 for entry in fulfillment['lineItems']]
        return obj('Fulfillment', id=fulfillment['id'], legacyResourceId=str(fulfillment['num']),
                   name=fulfillment['name'], status=fulfillment['status'],
                   createdAt=fulfillment['createdAt'], updatedAt=fulfillment['updatedAt'],
                   order=lambda args: self.order_view(order),
                   trackingInfo=lambda args: [obj('FulfillmentTrackingInfo', **info) for info
                                              in fulfillment['trackingInfo']][:args.get('first')],
                   fulfillmentLineItems=connection(lines, 'FulfillmentLineItem'))

    def subscription_view(self, sub):
        return obj('WebhookSubscription', id=sub['id'], legacyResourceId=str(sub['num']),
                   topic=sub['topic'], format=sub['format'], includeFields=sub['includeFields'],
                   metafieldNamespaces=sub['metafieldNamespaces'], filter=sub['filter'],
                   createdAt=sub['createdAt'], updatedAt=sub['updatedAt'],
                   callbackUrl=sub['callbackUrl'],
                   endpoint=obj('WebhookHttpEndpoint', callbackUrl=sub['callbackUrl']))

    # GraphQL resolvers ---------------------------------------------------

    def resolve_order(self, args, context):
        order = self.orders.get(args['id'])
        return self.order_view(order) if order else None

    def resolve_orders(self, args, context):
        checks, warnings = order_search(args.get('query'))
        if warnings:
            context.setdefault('search', []).append({'path': ['orders'],
                                                     'query': args['query'],
                                                     'warnings': warnings})
        records = [o for o in self.orders.values() if all(check(o) for check in checks)]
        field = ORDER_SORT.get(args.get('sortKey') or 'ID')
        return keyed_connection(records, 'Order', (lambda o: o[field]) if field
                                else (lambda o: o['num']), self.order_view, args)

    def resolve_fulfillmentOrder(self, args, context):
        fo = self.fulfillment_orders.get(args['id'])
        return self.fulfillment_order_view(fo) if fo else None

    def resolve_webhookSubscription(self, args, context):
        sub = self.webhook_subscriptions.get(args['id'])
        return self.subscription_view(sub) if sub else None

    def resolve_webhookSubscriptions(self, args, context):
        subs = [s for s in self.webhook_subscriptions.values()
                if (not args.get('topics') or s['topic'] in args['topics'])
                and (not args.get('callbackUrl') or s['callbackUrl'] == args['callbackUrl'])
                and (not args.get('format') or s['format'] == args['format'])]
        return connection([self.subscription_view(s) for s in subs],
                          'WebhookSubscription')(args)

    # fulfillmentCreate -----------------------------------------------------

    def resolve_fulfillmentCreate(self, args, context, mutation='fulfillmentCreate'):
        """Fulfil fulfillment order line items (all remaining when none are listed)."""
        data = args['fulfillment']
        picks, errors = self.fulfillment_picks(data['lineItemsByFulfillmentOrder'])
        if errors:
            return self.payload(mutation, errors, fulfillment=None)
        fulfillment = self.apply_fulfillment(picks, data, args.get('message'))
        return self.payload(mutation, [], fulfillment=self.fulfillment_view(fulfillment))

    def resolve_fulfillmentCreateV2(self, args, context):
        return self.resolve_fulfillmentCreate(args, context, 'fulfillmentCreateV2')

    def fulfillment_picks(self, entries):
        """([(fulfillment order, its line item, quantity)], userErrors)."""
        field = ['fulfillment']
        if not entries:
            return [], [(field, 'lineItemsByFulfillmentOrder must not be empty.', None)]
        picks, orders = [], set()
        for entry in entries:
            fo = self.fulfillment_orders.get(entry['fulfillmentOrderId'])
            if fo is None:
                return [], [(field, 'Fulfillment order does not exist.', None)]
            orders.add(fo['orderId'])
            if fo['status'] not in FULFILLABLE:
                return [], [(field, f'Fulfillment order {fo["id"]} has an unfulfillable '
                                    f'status= {fo["status"].lower()}.', None)]
            chosen, problem = self.fo_line_picks(fo, entry.get('fulfillmentOrderLineItems'))
            if problem:
                return [], [(field, problem, None)]
            picks += [(fo, line, quantity) for line, quantity in chosen]
        if len(orders) > 1:
            return [], [(field, 'All fulfillment orders must belong to the same order.', None)]
        if not picks:
            return [], [(field, 'There are no fulfillment order line items to fulfill.', None)]
        return picks, []

    @staticmethod
    def fo_line_picks(fo, requested):
        """([(line, quantity)], problem or None) for one fulfillment order."""
        lines = {line['id']: line for line in fo['lineItems']}
        if not requested:
            return [(line, line['remainingQuantity']) for line in fo['lineItems']
                    if line['remainingQuantity'] > 0], None
        wanted = collections.Counter()
        for item in requested:
            if item['id'] not in lines:
                return [], (f'Fulfillment order line item {item["id"]} does not exist on '
                            f'fulfillment order {fo["id"]}.')
            wanted[item['id']] += item['quantity']
        for line_id, quantity in wanted.items():
            if quantity <= 0 or quantity > lines[line_id]['remainingQuantity']:
                return [], 'Invalid fulfillment order line item quantity requested.'
        return [(lines[line_id], quantity) for line_id, quantity in wanted.items()], None

    def apply_fulfillment(self, picks, data, message):
        order = self.orders[picks[0][0]['orderId']]
        number, now = self.next_id(), iso_now()
        fulfillment = {'num': number, 'id': f'gid://shopify/Fulfillment/{number}',
                       'orderId': order['id'],
                       'name': f'{order["name"]}.{len(order["fulfillments"]) + 1}',
                       'status': 'SUCCESS', 'createdAt': now, 'updatedAt': now,
                       'trackingInfo': tracking_infos(data.get('trackingInfo')),
                       'notifyCustomer': bool(data.get('notifyCustomer')), 'message': message,
                       'originAddress': data.get('originAddress'), 'lineItems': []}
        for fo, line, quantity in picks:
            line['remainingQuantity'] -= quantity
            entry_number = self.next_id()
            fulfillment['lineItems'].append({
                'num': entry_number, 'id': f'gid://shopify/FulfillmentLineItem/{entry_number}',
                'lineItemId': line['lineItemId'], 'fulfillmentOrderId': fo['id'],
                'fulfillmentOrderLineItemId': line['id'], 'quantity': quantity})
        for fo in {fo['id']: fo for fo, _, _ in picks}.values():
            left = any(line['remainingQuantity'] for line in fo['lineItems'])
            fo.update(status='IN_PROGRESS' if left else 'CLOSED', updatedAt=now)
        self.fulfillments[fulfillment['id']] = fulfillment
        order['fulfillments'].append(fulfillment['id'])
        order['updatedAt'] = now
        self.counts['fulfillments_created'] += 1
        self.notify('ORDERS_UPDATED', order)
        self.notify('ORDERS_FULFILLED' if self.fulfillment_status(order) == 'FULFILLED'
                    else 'ORDERS_PARTIALLY_FULFILLED', order)
        return fulfillment

    # Webhook subscriptions -------------------------------------------------

    def resolve_webhookSubscriptionCreate(self, args, context):
        data, topic = args['webhookSubscription'], args['topic']
        url = data.get('callbackUrl') or ''
        problem = self.callback_problem(url, topic)
        if problem:
            return self.payload('webhookSubscriptionCreate', [problem], webhookSubscription=None)
        number, now = self.next_id(), iso_now()
        sub = {'num': number, 'id': f'gid://shopify/WebhookSubscription/{number}',
               'topic': topic, 'callbackUrl': url, 'format': data.get('format') or 'JSON',
               'includeFields': list(data.get('includeFields') or []),
               'metafieldNamespaces': list(data.get('metafieldNamespaces') or []),
               'filter': data.get('filter'), 'createdAt': now, 'updatedAt': now}
        self.webhook_subscriptions[sub['id']] = sub
        return self.payload('webhookSubscriptionCreate', [],
                            webhookSubscription=self.subscription_view(sub))

    def callback_problem(self, url, topic):
        """A (field, message, code) userError for a callbackUrl, or None."""
        parts = urlsplit(url)
        if parts.scheme not in ('http', 'https') or not parts.hostname:
            return (['webhookSubscription', 'callbackUrl'], 'Address is invalid', None)
        if parts.scheme == 'http' and parts.hostname not in LOOPBACK:
            return (['webhookSubscription', 'callbackUrl'],
                    'Address protocol http:// is not supported', None)
        if any(s['topic'] == topic and s['callbackUrl'] == url
               for s in self.webhook_subscriptions.values()):
            return (['webhookSubscription', 'callbackUrl'],
                    'Address for this topic has already been taken', None)
        return None

    def resolve_webhookSubscriptionDelete(self, args, context):
        if self.webhook_subscriptions.pop(args['id'], None) is None:
            return self.payload('webhookSubscriptionDelete', [(
                ['id'], 'Webhook subscription does not exist', None)],
                deletedWebhookSubscriptionId=None)
        return self.payload('webhookSubscriptionDelete', [],
                            deletedWebhookSubscriptionId=args['id'])

    # Webhook deliveries ----------------------------------------------------

    def notify(self, topic, order, wait=False):
        """Deliver ``topic`` for ``order`` to its subscriptions and ``webhook_urls``:
        at once when ``wait``, else from a greenlet."""
        deliveries = [self.new_delivery(topic, order, s['callbackUrl'], s['includeFields'])
                      for s in self.webhook_subscriptions.values() if s['topic'] == topic]
        if topic in ORDER_TOPICS:
            deliveries += [self.new_delivery(topic, order, url, [])
                           for url in self.scenario.get('webhook_urls') or []]
        self.dispatch(deliveries, wait)

    def dispatch(self, deliveries, wait):
        if not deliveries:
            return
        if wait:
            for delivery in deliveries:
                self.deliver(delivery)
        else:
            self.senders.spawn(lambda: [self.deliver(d) for d in deliveries])

    def new_delivery(self, topic, order, url, include_fields):
        payload = self.order_payload(order)
        if include_fields:
            payload = {k: v for k, v in payload.items() if k in include_fields}
        body = json.dumps(payload).encode()
        webhook_id = str(uuid.uuid4())
        headers = {'Content-Type': 'application/json', 'X-Shopify-Topic': rest_topic(topic),
                   'X-Shopify-Hmac-Sha256': webhook_signature(body,
                                                              self.scenario['webhook_secret']),
                   'X-Shopify-Webhook-Id': webhook_id, 'X-Shopify-Event-Id': str(uuid.uuid4()),
                   'X-Shopify-Shop-Domain': self.scenario['shop_domain'],
                   'X-Shopify-API-Version': self.scenario['webhook_api_version'],
                   'X-Shopify-Triggered-At': iso_millis(), 'User-Agent': 'Shopify-Captain-Hook'}
        delivery = {'topic': rest_topic(topic), 'url': url, 'webhook_id': webhook_id,
                    'body': body, 'headers': headers}
        self.webhooks[webhook_id] = delivery
        return delivery

    def deliver(self, delivery):
        """Send a delivery ``webhook_repeat`` times (Shopify does redeliver)."""
        for _ in range(max(1, int(self.scenario['webhook_repeat']))):
            self.send_with_retries(delivery)

    def send_with_retries(self, delivery):
        """Attempts until a 2xx, at most 1 + ``webhook_retries``; pauses of
        1, 2, 4... s times ``time_scale`` between them."""
        for attempt in range(1 + max(0, int(self.scenario['webhook_retries']))):
            if attempt:
                gevent.sleep(min(2 ** (attempt - 1), 60) * float(self.scenario['time_scale']))
            if self.attempt(delivery, attempt + 1):
                return True
        return False

    def attempt(self, delivery, attempt):
        """POST once; record it; True when answered 2xx (or not worth retrying)."""
        started = time.monotonic()
        entry = {'topic': delivery['topic'], 'url': delivery['url'],
                 'webhook_id': delivery['webhook_id'],
                 'event_id': delivery['headers']['X-Shopify-Event-Id'], 'attempt': attempt}
        if urlsplit(delivery['url']).hostname not in LOOPBACK:
            self.webhook_deliveries.append({**entry, 'status': 'error', 'seconds': 0,
                                            'error': 'only loopback is reachable here'})
            return True
        session = requests.Session()
        session.trust_env = False   # loopback: never through an HTTP(S)_PROXY
        try:
            response = session.post(delivery['url'], data=delivery['body'],
                                    headers=delivery['headers'], allow_redirects=False,
                                    timeout=float(self.scenario['webhook_timeout_seconds']))
            status, error = response.status_code, None
        except requests.RequestException as exc:
            status, error = 'error', type(exc).__name__
        finally:
            session.close()
        self.webhook_deliveries.append({**entry, 'status': status, 'error': error,
                                        'seconds': round(time.monotonic() - started, 3)})
        return isinstance(status, int) and 200 <= status < 300

    def redeliver(self, data):
        """Send one recorded delivery again (same body, signature and webhook id)."""
        delivery = self.webhooks.get((data or {}).get('webhook_id'))
        if delivery is None:
            raise LookupError('no such webhook_id')
        if data.get('wait'):
            self.send_with_retries(delivery)
        else:
            self.senders.spawn(self.send_with_retries, delivery)
        return {'webhook_id': delivery['webhook_id'], 'topic': delivery['topic'],
                'url': delivery['url']}


# The fake ##################################################################

class ShopifyFake(OrderDesk):
    """Scenario and state of one fake shop: products, staged uploads, bucket."""

    def __init__(self):
        self.schema = Schema(SDL)
        self.reset()

    def reset(self):
        self.scenario = copy.deepcopy(DEFAULT_SCENARIO)
        self.requests = []
        self.products = collections.OrderedDict()   # gid -> record
        self.staged = {}                            # key -> staged target record
        self.operations = {}                        # ProductSetOperation gid -> product gid
        self.serial = 0
        self.counts = {'throttled': 0, 'errors': 0, 'total_requests': 0, 'staged_uploads': 0,
                       'external_downloads': 0}
        self.bucket = {'level': float(self.scenario['bucket_max']), 'at': time.monotonic()}
        self.random = random.Random(self.scenario['error_seed'])
        self.reset_orders()

    def configure(self, patch):
        if 'error_seed' in patch:
            self.random = random.Random(patch['error_seed'])
        self.level()
        self.scenario.update(patch)
        if 'bucket_available' in patch:
            self.bucket['level'] = float(patch['bucket_available'])
        self.bucket['level'] = min(self.bucket['level'], float(self.scenario['bucket_max']))

    def next_id(self):
        self.serial += 1
        return 8_100_000_000_000 + self.serial

    def state(self):
        made_by = collections.Counter(p['createdBy'] for p in self.products.values())
        return {'products': [self.state_product(p) for p in self.products.values()],
                'publications': self.scenario['publications'],
                'created_by_api': made_by['api'], 'created_by_channel': made_by['channel'],
                **self.orders_state(), **self.counts}

    def state_product(self, record):
        out = copy.deepcopy(record)
        out['onlineStoreUrl'] = self.online_url(record)
        for media in out['media']:
            media['status'] = self.media_status(media)[0]
        return out

    # Leaky bucket --------------------------------------------------------

    def level(self):
        now = time.monotonic()
        refill = (now - self.bucket['at']) * float(self.scenario['restore_rate'])
        self.bucket['level'] = min(float(self.scenario['bucket_max']),
                                   self.bucket['level'] + refill)
        self.bucket['at'] = now
        return self.bucket['level']

    def spend(self, cost):
        """Take ``cost`` points from the bucket; False (and counted) if it is short."""
        if cost > self.level():
            self.counts['throttled'] += 1
            return False
        self.bucket['level'] -= cost
        return True

    def cost(self, requested, actual):
        return {'requestedQueryCost': requested, 'actualQueryCost': actual,
                'throttleStatus': {'maximumAvailable': float(self.scenario['bucket_max']),
                                   'currentlyAvailable': int(self.level()),
                                   'restoreRate': float(self.scenario['restore_rate'])}}

    # Failure injection -------------------------------------------------

    def random_failure(self, operations):
        """With ``error_rate``, now and then a 500 rule (for a mutation, as
        often after it took effect as before), else None."""
        rate = float(self.scenario.get('error_rate') or 0)
        if rate and self.random.random() < rate:
            mutation = any(name in PAYLOAD_TYPES for name in operations)
            return {'status': 500, 'after_save': mutation and self.random.random() < 0.5}
        return None

    def injected_failure(self, path, operations, after_save=False):
        """The first matching ``fail_next`` rule of one kind (failing before
        the operation runs, or with ``after_save`` once it ran), consumed, or
        None."""
        for rule in list(self.scenario.get('fail_next') or []):
            if bool(rule.get('after_save')) != after_save:
                continue
            if rule.get('path_contains', '') not in path:
                continue
            if rule.get('operation') and rule['operation'] not in operations:
                continue
            rule['times'] = rule.get('times', 1) - 1
            if rule['times'] <= 0:
                self.scenario['fail_next'].remove(rule)
            return rule
        return None

    def injected_user_error(self, mutation):
        rule = self.scenario.get('user_error_next')
        if not rule or rule.get('mutation') != mutation:
            return None
        rule['times'] = rule.get('times', 1) - 1
        if rule['times'] <= 0:
            self.scenario['user_error_next'] = None
        return [(rule.get('field'), rule.get('message', 'Injected user error.'),
                 rule.get('code', 'INVALID_INPUT'))]

    def delay_for(self, path):
        rules = self.scenario.get('slow') or []
        for rule in [rules] if isinstance(rules, dict) else rules:
            if rule.get('path_contains', '') in path:
                return float(rule.get('seconds', 0))
        return 0

    # GraphQL request ---------------------------------------------------

    def graphql(self, version, body, base):
        """Answer one GraphQL request: (HTTP status, JSON body)."""
        try:
            document = Parser(body['query']).document()
            op = Operation(self.schema, document, pick_operation(
                document, body.get('operationName')), version)
        except GraphQLError as exc:
            return 200, {'errors': [exc.payload], 'extensions': {'cost': self.cost(0, 0)}}
        errors = op.validate() or op.coerce_variables(body.get('variables') or {})
        requested = 0 if errors else op.plan()
        if op.errors:
            return 200, {'errors': op.errors, 'extensions': {'cost': self.cost(requested, 0)}}
        return self.run(op, requested, base)

    def run(self, op, requested, base):
        if requested > MAX_COST:
            return 200, {'errors': [{'message': f'Query cost is {requested}, which exceeds the '
                                                f'single query max cost limit ({MAX_COST}).',
                                     'extensions': {'code': 'MAX_COST_EXCEEDED',
                                                    'cost': requested,
                                                    'maxCost': MAX_COST}}],
                         'extensions': {'cost': self.cost(requested, None)}}
        path, names = bottle.request.path, op.root_fields()
        rule = self.random_failure(names) or self.injected_failure(path, names)
        if rule and not rule.get('after_save'):
            return self.internal_error(rule)
        if not self.spend(requested):
            return int(self.scenario['throttle_status_code']), {
                'errors': [{'message': 'Throttled', 'extensions': {
                    'code': 'THROTTLED',
                    'documentation': 'https://shopify.dev/api/usage/rate-limits'}}],
                'extensions': {'cost': self.cost(requested, None)}}
        context = {'base': base, 'version': op.version}
        try:
            data = op.execute(lambda name, args: self.resolve(op.root, name, args, context))
        except GraphQLError as exc:
            return 200, {'errors': [exc.payload], 'extensions': {
                'cost': self.cost(requested, requested)}}
        # Looked up only now: a throttled or failed request saved nothing, so
        # an after_save rule waits for one that did.
        rule = rule or self.injected_failure(path, names, after_save=True)
        if rule:  # done, and yet answered as a failure
            return self.internal_error(rule)
        extensions = {'cost': self.cost(requested, requested)}
        if context.get('search'):   # search terms the query ignored
            extensions['search'] = context['search']
        return 200, {'data': data, 'extensions': extensions}

    def internal_error(self, rule):
        status = int(rule.get('status', 500))
        self.counts['errors'] += 1
        if status == 0:
            bottle.request.environ['fake.drop'] = True
        request_id = secrets.token_hex(8)
        return status or 500, {'errors': [{
            'message': rule.get('message', 'Internal error. Looks like something went wrong on '
                                          f'our end.\nRequest ID: {request_id}'),
            'extensions': {'code': 'INTERNAL_SERVER_ERROR', 'requestId': request_id}}]}

    def resolve(self, root, name, args, context):
        if root == 'Mutation':
            injected = self.injected_user_error(name)
            if injected:
                return self.payload(name, injected)
        return getattr(self, f'resolve_{name}')(args, context)

    def payload(self, mutation, errors, **fields):
        """A mutation payload; ``errors`` are (field, message, code) triples."""
        payload_type, error_type = PAYLOAD_TYPES[mutation]
        user_errors = []
        for field, message, code in errors:
            error = obj(error_type, field=field, message=message)
            if error_type != 'UserError':
                error['code'] = code
            user_errors.append(error)
        return obj(payload_type, userErrors=user_errors, **fields)

    # Views ---------------------------------------------------------------

    def shop_view(self):
        domain = self.scenario['shop_domain']
        return obj('Shop', id='gid://shopify/Shop/73', name=self.scenario['shop_name'],
                   email='owner@example.com', myshopifyDomain=domain, url=f'https://{domain}',
                   currencyCode='USD', primaryDomain=obj('Domain', id='gid://shopify/Domain/73',
                                                         host=domain, url=f'https://{domain}'))

    def publication_view(self, publication):
        number = publication['id'].rsplit('/', 1)[-1]
        return obj('Publication', id=publication['id'], name=publication['name'],
                   autoPublish=False, supportsFuturePublishing=True,
                   catalog=obj('AppCatalog', id=f'gid://shopify/AppCatalog/{number}',
                               title=publication['name'], status='ACTIVE'))

    def online_store_id(self):
        for publication in self.scenario['publications']:
            if publication['name'] == 'Online Store':
                return publication['id']
        return None

    def online_url(self, record):
        if record['status'] == 'ACTIVE' and self.online_store_id() in record['publications']:
            return f'https://{self.scenario["shop_domain"]}/products/{record["handle"]}'
        return None

    def product_view(self, record):
        domain = self.scenario['shop_domain']
        variants = [self.variant_view(record, v) for v in record['variants']]
        media = [self.media_view(m) for m in record['media']]
        return obj(
            'Product', id=record['id'], legacyResourceId=str(record['num']),
            title=record['title'], handle=record['handle'],
            descriptionHtml=record['descriptionHtml'],
            description=re.sub(r'<[^>]+>', '', record['descriptionHtml']),
            vendor=record['vendor'], productType=record['productType'], tags=record['tags'],
            status=record['status'], createdAt=record['createdAt'],
            updatedAt=record['updatedAt'], publishedAt=record['publishedAt'],
            onlineStoreUrl=self.online_url(record),
            onlineStorePreviewUrl=f'https://{domain}/products/{record["handle"]}?preview=1',
            hasOnlyDefaultVariant=[o['name'] for o in record['options']] == ['Title'],
            totalInventory=sum(v['inventoryQuantity'] for v in record['variants']),
            tracksInventory=any(v['tracked'] for v in record['variants']),
            options=lambda args: [self.option_view(record, o)
                                  for o in record['options']][:args.get('first')],
            variants=connection(variants, 'ProductVariant'), variantsCount=count(len(variants)),
            media=connection(media, 'Media'), mediaCount=count(len(media)),
            seo=obj('SEO', title=record['seo'].get('title'),
                    description=record['seo'].get('description')),
            availablePublicationsCount=count(len(self.scenario['publications'])),
            publishedOnCurrentPublication=False,
            publishedOnPublication=lambda args: args['publicationId'] in record['publications'],
            resourcePublicationsCount=count(len(record['publications'])))

    def option_view(self, record, option):
        used = {(o['name'], o['value']) for v in record['variants']
                for o in v['selectedOptions']}
        return obj('ProductOption', id=option['id'], name=option['name'],
                   position=option['position'], values=[v['name'] for v in option['values']],
                   optionValues=[obj('ProductOptionValue', id=v['id'], name=v['name'],
                                     hasVariants=(option['name'], v['name']) in used)
                                 for v in option['values']])

    def variant_view(self, record, variant):
        return obj(
            'ProductVariant', id=variant['id'], legacyResourceId=str(variant['num']),
            title=variant['title'], displayName=f'{record["title"]} - {variant["title"]}',
            price=variant['price'], compareAtPrice=variant['compareAtPrice'],
            sku=variant['sku'], barcode=variant['barcode'], position=variant['position'],
            selectedOptions=[obj('SelectedOption', **o) for o in variant['selectedOptions']],
            inventoryPolicy=variant['inventoryPolicy'],
            inventoryItem=obj('InventoryItem', id=f'gid://shopify/InventoryItem/{variant["num"]}',
                              sku=variant['sku'], tracked=variant['tracked'],
                              requiresShipping=variant['requiresShipping'], measurement=obj(
                                  'InventoryItemMeasurement',
                                  id=f'gid://shopify/InventoryItemMeasurement/{variant["num"]}',
                                  weight=obj('Weight', **variant['weight'])
                                  if variant['weight'] else None)),
            availableForSale=record['status'] == 'ACTIVE' and sellable(variant),
            inventoryQuantity=variant['inventoryQuantity'], taxable=True,
            createdAt=record['createdAt'], updatedAt=record['updatedAt'],
            product=lambda args: self.product_view(record))

    def media_status(self, media):
        """(status, errors) now, after the scenario's processing delay."""
        ready_at = media['created'] + float(self.scenario['media_processing_seconds'])
        if time.monotonic() < ready_at:
            return 'PROCESSING', []
        return media['outcome'], media['errors']

    def media_view(self, media):
        status, errors = self.media_status(media)
        image = None
        if status == 'READY':
            image = obj('Image', id=f'gid://shopify/ImageSource/{media["num"]}',
                        url=f'https://cdn.shopify.com/s/files/1/0073/files/{media["filename"]}',
                        altText=media['alt'], width=media['width'], height=media['height'])
        return obj('MediaImage', id=media['id'], alt=media['alt'], mediaContentType='IMAGE',
                   status=status, mediaErrors=[obj('MediaError', **e) for e in errors],
                   preview=obj('MediaPreviewImage', image=image,
                               status='READY' if image else status),
                   image=image)

    # Query resolvers -----------------------------------------------------

    def resolve_shop(self, args, context):
        return self.shop_view()

    def resolve_publications(self, args, context):
        views = [self.publication_view(p) for p in self.scenario['publications']]
        return connection(views, 'Publication')(args)

    def resolve_product(self, args, context):
        record = self.products.get(args['id'])
        return self.product_view(record) if record else None

    def resolve_productByHandle(self, args, context):
        record = self.by_handle(args['handle'])
        return self.product_view(record) if record else None

    def resolve_products(self, args, context):
        records = [r for r in self.products.values() if matches(r, args.get('query') or '')]
        return connection([self.product_view(r) for r in records], 'Product')(args)

    def resolve_productOperation(self, args, context):
        product_id = self.operations.get(args['id'])
        if product_id is None:
            return None
        record = self.products.get(product_id)
        return obj('ProductSetOperation', id=args['id'], status='COMPLETE',
                   product=self.product_view(record) if record else None, userErrors=[])

    def resolve_publicApiVersions(self, args, context):
        versions = [f'{y}-{m}' for y in (2024, 2025, 2026) for m in ('01', '04', '07', '10')]
        return [obj('ApiVersion', handle=v, displayName=v, supported=v >= '2025-01')
                for v in versions]

    # Lookups and shared checks --------------------------------------------

    def by_handle(self, handle):
        for record in self.products.values():
            if record['handle'] == handle:
                return record
        return None

    def handle_taken(self, handle, record):
        owner = self.by_handle(handle)
        return owner is not None and owner is not record

    def unique_handle(self, title):
        base, n = slug(title), 0
        handle = base
        while self.by_handle(handle):
            n += 1
            handle = f'{base}-{n}'
        return handle

    def check_options(self, options, path):
        """userErrors for productOptions: at most 3, named, unique, with values."""
        if len(options) > 3:
            return [(path, 'Options over limit: a product can have at most 3 options.',
                     'OPTIONS_OVER_LIMIT')]
        errors, names = [], set()
        for n, option in enumerate(options):
            here = [*path, str(n)]
            name = (option.get('name') or '').strip()
            if not name:
                errors.append(([*here, 'name'], "Option name can't be blank", 'INVALID_INPUT'))
            elif name.lower() in names:
                errors.append(([*here, 'name'], f"Duplicated option name '{name}'.",
                               'DUPLICATED_OPTION_NAME'))
            names.add(name.lower())
            errors += self.check_option_values(option.get('values') or [], here)
        return errors

    def check_option_values(self, values, here):
        names = [(v.get('name') or '').strip() for v in values]
        if not names:
            return [([*here, 'values'], 'Each option must have at least one option value '
                                        'specified.', 'OPTION_VALUES_MISSING')]
        if '' in names:
            return [([*here, 'values'], "Option value name can't be blank", 'INVALID_INPUT')]
        if len(set(names)) != len(names):
            return [([*here, 'values'], 'Duplicated option value.', 'DUPLICATED_OPTION_VALUE')]
        return []

    def check_source(self, source, path):
        if not source:
            return [(path, 'File must have an originalSource or an id.', 'INVALID_INPUT')]
        if not re.match(r'https?://', source):
            return [(path, f'Image URL is invalid: {source!r} is neither an http(s) URL nor a '
                           'staged upload resourceUrl.', 'INVALID_INPUT')]
        return []

    def new_media(self, source, alt, filename):
        outcome, errors, size = self.media_outcome(source)
        number = self.next_id()
        return {'num': number, 'id': f'gid://shopify/MediaImage/{number}', 'alt': alt or '',
                'source': source,
                'filename': filename or urlsplit(source).path.rsplit('/', 1)[-1],
                'created': time.monotonic(), 'outcome': outcome, 'errors': errors,
                'width': size[0], 'height': size[1]}

    def media_outcome(self, source):
        """(READY|FAILED, mediaErrors, (width, height)) for an originalSource."""
        staged = next((s for s in self.staged.values() if s['resourceUrl'] == source), None)
        if staged is None:
            if '/_fake_upload/' in source or source.startswith(STAGED_HOST):
                return failed('IMAGE_DOWNLOAD_FAILURE', 'Not a staged resourceUrl: pass the '
                                                        'target resourceUrl, not its url.')
            if urlsplit(source).hostname not in LOOPBACK:
                return 'READY', [], (None, None)  # out of reach: taken as a good image
            data = self.download(source)
            if data is None:
                return failed('IMAGE_DOWNLOAD_FAILURE', f'Image could not be downloaded '
                                                        f'from {source}.')
            return image_outcome(data)
        if staged['data'] is None:
            return failed('IMAGE_DOWNLOAD_FAILURE', 'The staged upload was never completed.')
        return image_outcome(staged['data'])

    def download(self, url):
        """The bytes at an external (loopback) URL, or None when it cannot be read."""
        session = requests.Session()
        session.trust_env = False   # loopback: never through an HTTP(S)_PROXY
        self.counts['external_downloads'] += 1
        try:
            response = session.get(url, timeout=10)
        except requests.RequestException:
            return None
        return response.content if response.status_code < 400 else None

    def new_record(self, title, handle):
        number, now = self.next_id(), iso_now()
        record = {'num': number, 'id': f'gid://shopify/Product/{number}', 'title': title,
                  'handle': handle, 'descriptionHtml': '', 'vendor': self.scenario['shop_name'],
                  'productType': '', 'tags': [], 'status': 'ACTIVE', 'seo': {},
                  'createdAt': now, 'updatedAt': now, 'publishedAt': None, 'options': [],
                  'variants': [], 'media': [], 'publications': [], 'createdBy': 'api'}
        self.products[record['id']] = record
        return record

    def build_options(self, options):
        return [{'id': f'gid://shopify/ProductOption/{self.next_id()}',
                 'name': o['name'].strip(), 'position': n + 1,
                 'values': [{'id': f'gid://shopify/ProductOptionValue/{self.next_id()}',
                             'name': v['name'].strip()} for v in o['values']]}
                for n, o in enumerate(options)]

    def build_variant(self, combo, data, position, previous=None):
        """A variant record; ``combo`` is [(option name, value)] in option order.

        A new variant gets Shopify's defaults (tracked, 0 in stock, DENY: sold
        out); an existing one (``previous``, matched by id) keeps whatever the
        input omits."""
        old = previous or {}
        number = old.get('num') or self.next_id()
        item = data.get('inventoryItem') or {}
        price, compare = data.get('price'), data.get('compareAtPrice')
        return {'num': number, 'id': f'gid://shopify/ProductVariant/{number}',
                'title': ' / '.join(value for _, value in combo),
                'price': f'{decimal.Decimal(price):.2f}' if price is not None
                else old.get('price', '0.00'),
                'compareAtPrice': f'{decimal.Decimal(compare):.2f}' if compare
                else old.get('compareAtPrice'),
                'sku': data.get('sku') or item.get('sku') or old.get('sku'),
                'barcode': data.get('barcode') or old.get('barcode'), 'position': position,
                'selectedOptions': [{'name': n, 'value': v} for n, v in combo],
                'inventoryPolicy': data.get('inventoryPolicy')
                or old.get('inventoryPolicy', 'DENY'),
                'tracked': flag(item, 'tracked', old.get('tracked', True)),
                'requiresShipping': flag(item, 'requiresShipping',
                                         old.get('requiresShipping', True)),
                'inventoryQuantity': old.get('inventoryQuantity', 0),
                'weight': weight_of(item) or old.get('weight'),
                'standalone': data.get('standalone', False),
                'media': (data.get('file') or {}).get('originalSource')}

    def standalone(self, record):
        """productCreate's single variant: the first value of every option."""
        if not record['options']:
            record['options'] = self.build_options([{'name': 'Title',
                                                     'values': [{'name': 'Default Title'}]}])
        combo = [(o['name'], o['values'][0]['name']) for o in record['options']]
        record['variants'] = [self.build_variant(combo, {'standalone': True}, 1)]

    # productSet ------------------------------------------------------------

    def resolve_productSet(self, args, context):
        """Create or update a whole product (list fields replace)."""
        data, identifier = args['input'], args.get('identifier')
        record, errors = self.set_target(data, identifier)
        if not errors:
            errors = self.check_set(data, identifier, record)
        if errors:
            return self.payload('productSet', errors, product=None, productSetOperation=None)
        record = self.apply_set(data, identifier, record)
        if args.get('synchronous', True):
            return self.payload('productSet', [], product=self.product_view(record),
                                productSetOperation=None)
        op_id = f'gid://shopify/ProductSetOperation/{self.next_id()}'
        self.operations[op_id] = record['id']
        return self.payload('productSet', [], product=None, productSetOperation=obj(
            'ProductSetOperation', id=op_id, status='CREATED', product=None, userErrors=[]))

    def set_target(self, data, identifier):
        """(existing record or None to create, errors)."""
        if identifier is not None:
            return self.identified(data, identifier)
        if data.get('id'):
            record = self.products.get(data['id'])
            if record is None:
                return None, [(['input', 'id'], 'Product does not exist',
                               'PRODUCT_DOES_NOT_EXIST')]
            return record, []
        return None, []

    def identified(self, data, identifier):
        if data.get('id'):
            return None, [(['input', 'id'], 'The id field is not allowed if identifier is '
                                            'provided.', 'ID_NOT_ALLOWED')]
        if identifier.get('id'):
            record = self.products.get(identifier['id'])
            if record is None:
                return None, [(['identifier', 'id'], 'Resource matching the identifier was not '
                                                     'found.', 'NOT_FOUND')]
            return record, []
        handle = identifier.get('handle')
        if not handle:
            return None, [(['identifier'], 'The identifier needs an id or a handle.',
                           'MISSING_FIELD_REQUIRED')]
        if data.get('handle') is not None and slug(data['handle']) != slug(handle):
            return None, [(['input', 'handle'], 'The identifier value does not match the value '
                                                'of the corresponding field in the input.',
                           'INPUT_MISMATCH')]
        return self.by_handle(slug(handle)), []

    def check_set(self, data, identifier, record):
        errors = []
        if (record is None or 'title' in data) and not (data.get('title') or '').strip():
            errors.append((['input', 'title'], "Title can't be blank", 'INVALID_PRODUCT'))
        handle = data.get('handle') or (identifier or {}).get('handle')
        if handle and self.handle_taken(slug(handle), record):
            errors.append((['input', 'handle'], f"Handle '{slug(handle)}' already in use. "
                                                'Please provide a new handle.',
                           'HANDLE_NOT_UNIQUE'))
        errors += self.check_set_shape(data, record)
        for n, entry in enumerate(data.get('files') or []):
            if not entry.get('id'):
                errors += self.check_source(entry.get('originalSource'),
                                            ['input', 'files', str(n), 'originalSource'])
        return errors

    def check_set_shape(self, data, record):
        has_options, has_variants = 'productOptions' in data, 'variants' in data
        if has_variants and not has_options:
            return [(['input', 'productOptions'], 'Must specify product options when updating '
                                                  'variants.', 'PRODUCT_OPTIONS_INPUT_MISSING')]
        if has_options and not has_variants:
            return [(['input', 'variants'], 'Must specify variants when updating options.',
                     'VARIANTS_INPUT_MISSING')]
        if not has_options:
            return []
        errors = self.check_options(data['productOptions'] or [], ['input', 'productOptions'])
        if errors:
            return errors
        variants = data['variants'] or []
        if len(variants) > MAX_VARIANTS:
            return [(['input', 'variants'], f'Number of product variants ({len(variants)}) '
                                            f'exceeds the limit of {MAX_VARIANTS}.',
                     'VARIANTS_OVER_LIMIT')]
        return self.check_set_variants(variants, data['productOptions'], record)

    def check_set_variants(self, variants, options, record):
        choices = {o['name'].strip(): [v['name'].strip() for v in o['values']]
                   for o in options}
        known_ids = {v['id'] for v in record['variants']} if record else set()
        errors, seen = [], set()
        for n, variant in enumerate(variants):
            here = ['input', 'variants', str(n)]
            combo, problems = self.set_combo(variant['optionValues'], choices, here)
            errors += problems
            if not problems and tuple(combo) in seen:
                errors.append((here, f"The variant '{' / '.join(v for _, v in combo)}' already "
                                     'exists.', 'INVALID_VARIANT'))
            seen.add(tuple(combo))
            if variant.get('id') and variant['id'] not in known_ids:
                errors.append(([*here, 'id'], 'Product variant does not exist',
                               'PRODUCT_VARIANT_DOES_NOT_EXIST'))
            errors += self.variant_money(variant, here, 'INVALID_VARIANT')
            if (variant.get('file') or {}).get('originalSource') is not None:
                errors += self.check_source(variant['file']['originalSource'],
                                            [*here, 'file', 'originalSource'])
        return errors

    @staticmethod
    def variant_money(variant, here, code):
        errors = []
        for key in ('price', 'compareAtPrice'):
            if variant.get(key) is not None:
                problem = money_problem(variant[key], key.capitalize())
                if problem:
                    errors.append(([*here, key], problem[0], code))
        return errors

    @staticmethod
    def set_combo(option_values, choices, here):
        """([(option, value)] in option order, errors) for one productSet variant."""
        chosen, errors = {}, []
        for n, entry in enumerate(option_values):
            where = [*here, 'optionValues', str(n)]
            option, value = entry.get('optionName'), entry.get('name')
            if option not in choices:
                errors.append((where, f"Option '{option}' does not exist.",
                               'OPTION_DOES_NOT_EXIST'))
            elif value not in choices[option]:
                errors.append((where, f"Option value '{value}' does not exist for option "
                                      f"'{option}'.", 'OPTION_VALUE_DOES_NOT_EXIST'))
            elif option in chosen:
                errors.append((where, f"Option '{option}' is given twice.", 'INVALID_VARIANT'))
            else:
                chosen[option] = value
        missing = [name for name in choices if name not in chosen]
        if missing and not errors:
            errors.append(([*here, 'optionValues'], 'The variant needs a value for option(s) '
                                                    f"{', '.join(missing)}.", 'INVALID_VARIANT'))
        return [(name, chosen.get(name)) for name in choices], errors

    def apply_set(self, data, identifier, record):
        if record is None:
            handle = data.get('handle') or (identifier or {}).get('handle')
            record = self.new_record(data['title'], slug(handle) if handle
                                     else self.unique_handle(data['title']))
        elif data.get('handle'):
            record['handle'] = slug(data['handle'])
        for key in ('title', 'descriptionHtml', 'vendor', 'productType', 'status'):
            if data.get(key) is not None:
                record[key] = data[key]
        if 'tags' in data:
            record['tags'] = list(data['tags'] or [])
        if 'seo' in data:
            record['seo'] = dict(data['seo'] or {})
        if 'files' in data:
            record['media'] = self.set_media(data['files'] or [], record)
        if 'productOptions' in data:
            self.set_variants(record, data['productOptions'], data['variants'] or [])
        elif not record['variants']:
            self.standalone(record)
        record['updatedAt'] = iso_now()
        return record

    def set_media(self, files, record):
        existing = {m['id']: m for m in record['media']}
        return [existing[f['id']] if f.get('id') in existing
                else self.new_media(f.get('originalSource') or '', f.get('alt'),
                                    f.get('filename')) for f in files]

    def set_variants(self, record, options, variants):
        record['options'] = self.build_options(options)
        existing = {v['id']: v for v in record['variants']}
        names = [o['name'] for o in record['options']]
        record['variants'] = []
        for n, data in enumerate(variants):
            chosen = {e['optionName']: e['name'] for e in data['optionValues']}
            combo = [(name, chosen[name]) for name in names]
            record['variants'].append(self.build_variant(combo, data, n + 1,
                                                         existing.get(data.get('id'))))
            source = (data.get('file') or {}).get('originalSource')
            if source and all(m['source'] != source for m in record['media']):
                record['media'].append(self.new_media(source, None, None))

    # productCreate + productVariantsBulkCreate -----------------------------

    def resolve_productCreate(self, args, context):
        """Create a product with its options and ONE standalone variant (price 0.00)."""
        data = args.get('product') if args.get('product') is not None else args.get('input')
        errors = self.check_create(data, args.get('media') or [])
        if errors:
            return self.payload('productCreate', errors, product=None, shop=self.shop_view())
        handle = slug(data['handle']) if data.get('handle') else self.unique_handle(
            data['title'])
        record = self.new_record(data['title'], handle)
        for key in ('descriptionHtml', 'vendor', 'productType', 'status'):
            if data.get(key) is not None:
                record[key] = data[key]
        record['tags'] = list(data.get('tags') or [])
        record['seo'] = dict(data.get('seo') or {})
        record['options'] = self.build_options(data.get('productOptions') or [])
        self.standalone(record)
        record['media'] = [self.new_media(m['originalSource'], m.get('alt'), None)
                           for m in args.get('media') or []]
        return self.payload('productCreate', [], product=self.product_view(record),
                            shop=self.shop_view())

    def check_create(self, data, media):
        if data is None:
            return [(['product'], 'A product input is required.', None)]
        errors = []
        if not (data.get('title') or '').strip():
            errors.append((['title'], "Title can't be blank", None))
        if data.get('handle') and self.handle_taken(slug(data['handle']), None):
            errors.append((['handle'], f"Handle '{slug(data['handle'])}' already in use. Please "
                                       'provide a new handle.', None))
        errors += self.check_options(data.get('productOptions') or [], ['productOptions'])
        for n, entry in enumerate(media):
            errors += self.check_source(entry['originalSource'],
                                        ['media', str(n), 'originalSource'])
        return [(field, message, None) for field, message, _ in errors]

    def resolve_productVariantsBulkCreate(self, args, context):
        """Add variants; the standalone variant stays unless the strategy removes it."""
        record = self.products.get(args['productId'])
        if record is None:
            return self.payload('productVariantsBulkCreate', [(
                ['productId'], 'Product does not exist', 'PRODUCT_DOES_NOT_EXIST')],
                product=None, productVariants=None)
        keep = self.kept_variants(record, args.get('strategy') or 'DEFAULT')
        combos, errors = self.bulk_combos(record, args['variants'], keep)
        if not errors and len(keep) + len(combos) > MAX_VARIANTS:
            errors = [(['variants'], f'A product can have at most {MAX_VARIANTS} variants.',
                       'INVALID_INPUT')]
        if errors:
            return self.payload('productVariantsBulkCreate', errors, product=None,
                                productVariants=None)
        created = self.add_variants(record, keep, combos, args['variants'],
                                    args.get('media') or [])
        return self.payload('productVariantsBulkCreate', [], product=self.product_view(record),
                            productVariants=[self.variant_view(record, v) for v in created])

    @staticmethod
    def kept_variants(record, strategy):
        only_default = [o['name'] for o in record['options']] == ['Title']
        if strategy == 'REMOVE_STANDALONE_VARIANT' or (strategy == 'DEFAULT' and only_default):
            return [v for v in record['variants'] if not v['standalone']]
        return list(record['variants'])

    def bulk_combos(self, record, variants, keep):
        names = [o['name'] for o in record['options']]
        taken = {tuple(o['value'] for o in v['selectedOptions']) for v in keep}
        combos, errors = [], []
        for n, variant in enumerate(variants):
            here = ['variants', str(n)]
            combo, problems = self.bulk_combo(variant, names, here)
            title = ' / '.join(v for _, v in combo)
            if not problems and tuple(v for _, v in combo) in taken:
                problems.append((here, f"Variant '{title}' already exists.",
                                 'VARIANT_ALREADY_EXISTS'))
            problems += self.variant_money(variant, here, 'INVALID')
            if variant.get('id'):
                problems.append(([*here, 'id'], 'On create, this key cannot be used.',
                                 'NO_KEY_ON_CREATE'))
            taken.add(tuple(v for _, v in combo))
            combos.append(combo)
            errors += problems
        return combos, errors

    @staticmethod
    def bulk_combo(variant, names, here):
        values = variant.get('optionValues') or []
        if len(values) > len(names):
            return [], [([*here, 'optionValues'], 'Variant options are more than the product '
                                                  'options.',
                         'OPTION_VALUES_FOR_NUMBER_OF_UNKNOWN_OPTIONS')]
        chosen = {}
        for n, entry in enumerate(values):
            if entry.get('optionName') not in names:
                return [], [([*here, 'optionValues', str(n)], f"Option '{entry.get('optionName')}'"
                                                              ' does not exist on the product.',
                             'INVALID_INPUT')]
            chosen[entry['optionName']] = entry.get('name')
        if len(chosen) < len(names) or not all(chosen.values()):
            return [], [([*here, 'optionValues'], 'Variant options are not enough.',
                         'NEED_TO_ADD_OPTION_VALUES')]
        return [(name, chosen[name]) for name in names], []

    def add_variants(self, record, keep, combos, variants, media):
        for option in record['options']:
            known = {v['name'] for v in option['values']}
            for combo in combos:
                value = dict(combo)[option['name']]
                if value not in known:
                    known.add(value)
                    option['values'].append({'id': f'gid://shopify/ProductOptionValue/'
                                                   f'{self.next_id()}', 'name': value})
        created = [self.build_variant(combo, data, len(keep) + n + 1)
                   for n, (combo, data) in enumerate(zip(combos, variants))]
        record['variants'] = keep + created
        record['media'] += [self.new_media(m['originalSource'], m.get('alt'), None)
                            for m in media]
        record['updatedAt'] = iso_now()
        return created

    # productUpdate ---------------------------------------------------------

    def resolve_productUpdate(self, args, context):
        """Change the given fields of an existing product; never create one."""
        data = args.get('product') or {}
        record = self.products.get(data.get('id'))
        if record is None:
            return self.payload('productUpdate', [(['id'], 'Product does not exist', None)],
                                product=None)
        if data.get('handle') and self.handle_taken(slug(data['handle']), record):
            return self.payload('productUpdate', [(['handle'], 'Handle already in use.', None)],
                                product=None)
        for key in ('title', 'descriptionHtml', 'vendor', 'productType', 'status'):
            if data.get(key) is not None:
                record[key] = data[key]
        if data.get('handle'):
            record['handle'] = slug(data['handle'])
        if 'tags' in data:
            record['tags'] = list(data['tags'] or [])
        if 'seo' in data:
            record['seo'] = dict(data['seo'] or {})
        record['media'] += [self.new_media(m['originalSource'], m.get('alt'), None)
                            for m in args.get('media') or []]
        record['updatedAt'] = iso_now()
        return self.payload('productUpdate', [], product=self.product_view(record))

    # Printify's sync -------------------------------------------------------

    def channel_product(self, data):
        """A product made by a sales-channel app (Printify's sync): ACTIVE, on
        the Online Store, one untracked variant per entry with its SKU.
        Raises ValueError (-> 400) on a body the sync would never send."""
        entries, names = channel_shape(data)
        record = self.new_record(data['title'], self.unique_handle(data['title']))
        record.update(descriptionHtml=data.get('descriptionHtml') or '',
                      vendor=data.get('vendor') or record['vendor'],
                      tags=list(data.get('tags') or []), createdBy='channel',
                      publications=[self.online_store_id()], publishedAt=iso_now())
        record['options'] = self.build_options([
            {'name': name, 'values': [{'name': value} for value in
                                      dict.fromkeys(e['options'][name] for e in entries)]}
            for name in names])
        record['variants'] = [self.build_variant(
            [(name, e['options'][name]) for name in names],
            {'price': e['price'], 'sku': e['sku'], 'inventoryPolicy': 'DENY',
             'inventoryItem': {'tracked': False, 'measurement': {'weight': {
                 'value': e.get('grams') or 0, 'unit': 'GRAMS'}}}}, n + 1)
            for n, e in enumerate(entries)]
        if data.get('image_url'):
            record['media'] = [self.new_media(data['image_url'], data['title'], None)]
        return {'id': record['id'], 'legacyResourceId': str(record['num']),
                'handle': record['handle'], 'onlineStoreUrl': self.online_url(record)}

    def resolve_productDelete(self, args, context):
        gid = args['input']['id']
        if self.products.pop(gid, None) is None:
            return self.payload('productDelete', [(['id'], 'Product does not exist', None)],
                                deletedProductId=None, shop=self.shop_view())
        return self.payload('productDelete', [], deletedProductId=gid, shop=self.shop_view())

    # Staged uploads and publishing -----------------------------------------

    def resolve_stagedUploadsCreate(self, args, context):
        """Signed targets on this fake (``/_fake_upload/<key>``)."""
        errors, targets = [], []
        for n, entry in enumerate(args['input']):
            if not entry['filename'].strip() or not entry['mimeType'].strip():
                errors.append((['input', str(n)], 'filename and mimeType must not be blank.',
                               None))
            elif entry['resource'] in ('VIDEO', 'MODEL_3D') and not entry.get('fileSize'):
                errors.append((['input', str(n), 'fileSize'], 'fileSize is required for '
                                                              f'{entry["resource"]}.', None))
            else:
                targets.append(self.staged_target(entry, context['base']))
        if errors:
            return self.payload('stagedUploadsCreate', errors, stagedTargets=None)
        self.counts['staged_uploads'] += len(targets)
        return self.payload('stagedUploadsCreate', [], stagedTargets=targets)

    def staged_target(self, entry, base):
        key = secrets.token_hex(12)
        path = f'tmp/73/products/{key}/{entry["filename"]}'
        method = entry.get('httpMethod') or 'PUT'
        if method == 'POST':
            params = [('Content-Type', entry['mimeType']), ('success_action_status', '201'),
                      ('acl', 'private'), ('key', path), ('x-goog-date', '20261101T000000Z'),
                      ('x-goog-credential', 'fake-signer@shopify-tiers.iam.gserviceaccount.com/'
                                            '20261101/auto/storage/goog4_request'),
                      ('x-goog-algorithm', 'GOOG4-RSA-SHA256'),
                      ('x-goog-signature', hashlib.sha256(key.encode()).hexdigest()),
                      ('policy', base64.b64encode(path.encode()).decode())]
            url = f'{base}/_fake_upload/{key}'
        else:
            params = [('content_type', entry['mimeType']), ('acl', 'private')]
            url = f'{base}/_fake_upload/{key}?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Signature=' \
                  + hashlib.sha256(key.encode()).hexdigest()
        self.staged[key] = {'key': key, 'method': method, 'params': params,
                            'mimeType': entry['mimeType'], 'fileSize': entry.get('fileSize'),
                            'resourceUrl': STAGED_HOST + path, 'path': path, 'data': None}
        return obj('StagedMediaUploadTarget', url=url, resourceUrl=STAGED_HOST + path,
                   parameters=[obj('StagedUploadParameter', name=k, value=v)
                               for k, v in params])

    def receive_upload(self, key, request):
        """The signed-upload endpoint: (status, XML body)."""
        staged = self.staged.get(key)
        if staged is None:
            return 403, gcs_error('AccessDenied', 'Unknown or expired upload target.')
        if request.method != staged['method']:
            return 400, gcs_error('InvalidArgument', f'This target expects {staged["method"]}.')
        if staged['method'] == 'PUT':
            return self.receive_put(staged, request)
        content_type = request.headers.get('Content-Type', '')
        boundary = re.search(r'boundary="?([^";]+)"?', content_type)
        if not content_type.startswith('multipart/form-data') or not boundary:
            return 400, gcs_error('InvalidArgument', 'POST uploads must be multipart/form-data.')
        problem, data = check_form(multipart_parts(request.body.read(), boundary.group(1)),
                                   staged)
        if problem:
            return 400, problem
        staged['data'] = data
        return 201, (f'<?xml version="1.0" encoding="UTF-8"?><PostResponse><Location>'
                     f'{staged["resourceUrl"]}</Location><Bucket>shopify-staged-uploads'
                     f'</Bucket><Key>{staged["path"]}</Key><ETag>"{hashlib.md5(data).hexdigest()}'
                     '"</ETag></PostResponse>')

    def receive_put(self, staged, request):
        if request.headers.get('Content-Type', '') != staged['mimeType']:
            return 403, gcs_error('SignatureDoesNotMatch', 'Content-Type must be '
                                                           f'{staged["mimeType"]}.')
        data = request.body.read()
        if too_big(data, staged):
            return 400, gcs_error('EntityTooLarge', 'The file is larger than fileSize.')
        staged['data'] = data
        return 200, ''

    def resolve_publishablePublish(self, args, context):
        """Publish a product; only ACTIVE products, only known publications."""
        record = self.products.get(args['id'])
        errors = []
        if record is None:
            errors.append((['id'], 'Product does not exist', None))
        elif record['status'] != 'ACTIVE':
            errors.append((['id'], f'Product status is {record["status"]}; only ACTIVE '
                                   'products can be published.', None))
        known = {p['id'] for p in self.scenario['publications']}
        for n, entry in enumerate(args['input']):
            if entry.get('publicationId') not in known:
                errors.append((['input', str(n), 'publicationId'],
                               'Publication does not exist', None))
        if errors:
            return self.payload('publishablePublish', errors, publishable=None,
                                shop=self.shop_view())
        for entry in args['input']:
            if entry['publicationId'] not in record['publications']:
                record['publications'].append(entry['publicationId'])
        record['publishedAt'] = record['publishedAt'] or iso_now()
        return self.payload('publishablePublish', [], publishable=self.product_view(record),
                            shop=self.shop_view())


def sellable(variant):
    """Whether a customer can buy the variant now: stock, or no stock needed."""
    return (not variant['tracked'] or variant['inventoryPolicy'] == 'CONTINUE'
            or variant['inventoryQuantity'] > 0)


def channel_shape(data):
    """(variant entries, option names: Size, Color, then any other in the order
    first seen) of a /_fake/channel_products body; ValueError when malformed."""
    if not isinstance(data, dict) or not str(data.get('title') or '').strip():
        raise ValueError('title is required')
    entries = data.get('variants')
    if not isinstance(entries, list) or not entries:
        raise ValueError('variants must be a non-empty list')
    names = list(dict.fromkeys(name for e in entries for name in (e.get('options') or {})))
    names.sort(key=lambda name: ('Size', 'Color').index(name) if name in ('Size', 'Color')
               else 2)
    combos = set()
    for n, entry in enumerate(entries):
        options = entry.get('options') or {}
        if not entry.get('sku') or sorted(options) != sorted(names) or not names:
            raise ValueError(f'variants[{n}] needs a sku and a value for each of {names}')
        if money_problem(entry.get('price'), 'price'):
            raise ValueError(f'variants[{n}].price must be a decimal string like "24.99"')
        combos.add(tuple(options[name] for name in names))
    if len(combos) != len(entries):
        raise ValueError('two variants have the same options')
    if data.get('image_url') and not re.match(r'https?://', data['image_url']):
        raise ValueError('image_url must be empty or an http(s) URL')
    return entries, names


def flag(item, key, default):
    """A Boolean input field; absent or null keeps ``default``."""
    value = item.get(key)
    return default if value is None else value


def weight_of(item):
    weight = ((item or {}).get('measurement') or {}).get('weight')
    return {'value': float(weight['value']), 'unit': weight['unit']} if weight else None


def image_outcome(data):
    """(READY|FAILED, mediaErrors, (width, height)) for downloaded image bytes."""
    size = image_facts(data)
    if size is None:
        return failed('IMAGE_PROCESSING_FAILURE', 'The file is not a valid image.')
    if max(size) > MAX_SIDE or size[0] * size[1] > MAX_PIXELS:
        return failed('IMAGE_PROCESSING_FAILURE', f'Image is {size[0]}x{size[1]}; the '
                      f'maximum is {MAX_SIDE}x{MAX_SIDE} px and 20 megapixels.')
    return 'READY', [], size


def failed(code, message):
    return 'FAILED', [{'code': code, 'details': message, 'message': message}], (None, None)


def matches(record, query):
    """The few ``products(query:)`` terms the fake understands (handle:, status:, title:)."""
    for term in query.split():
        key, _, value = term.partition(':')
        if key in ('handle', 'status', 'title') and str(record[key]).lower() != value.lower():
            return False
    return True


def too_big(data, staged):
    return staged['fileSize'] is not None and len(data) > int(staged['fileSize'])


def gcs_error(code, message):
    return (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
            f'<Message>{message}</Message></Error>')


def multipart_parts(raw, boundary):
    """[(field name, bytes)] of a multipart/form-data body, in order."""
    parts = []
    for chunk in raw.split(b'--' + boundary.encode())[1:]:
        if chunk.startswith(b'--'):
            break
        head, _, data = chunk.partition(b'\r\n\r\n')
        name = re.search(rb'name="([^"]*)"', head)
        parts.append((name.group(1).decode() if name else '', data[:-2]
                      if data.endswith(b'\r\n') else data))
    return parts


def check_form(parts, staged):
    """(GCS error or None, file bytes): every parameter, exact, before ``file``."""
    names = [name for name, _ in parts]
    if 'file' not in names:
        return gcs_error('InvalidArgument', 'The form has no "file" field.'), None
    before = dict(parts[:names.index('file')])
    for name, value in staged['params']:
        if before.get(name, b'').decode(errors='replace') != value:
            return gcs_error('InvalidPolicyDocument', 'Invalid according to Policy: Policy '
                             f'Condition failed: ["eq", "${name}", "{value}"] (every '
                             'parameter must come, unchanged, before the file).'), None
    data = parts[names.index('file')][1]
    if too_big(data, staged):
        return gcs_error('EntityTooLarge', 'The file is larger than fileSize.'), None
    return None, data


# HTTP ######################################################################


def record(request):
    raw = request.body.read() if request.method in ('POST', 'PUT') else b''
    try:
        body = json.loads(raw) if raw and 'json' in request.content_type else None
    except ValueError:
        body = None
    return {'method': request.method, 'path': request.path, 'query': dict(request.query),
            'json': body, 'headers': dict(request.headers), 'body_size': len(raw),
            'time': time.time()}


class Pipeline:
    """Bottle plugin: record every non-control request and answer JSON errors."""

    name = 'shopify-pipeline'
    api = 2

    def __init__(self, fake):
        self.fake = fake

    def apply(self, callback, route):
        def wrapper(*args, **kwargs):
            if bottle.request.path.startswith('/_fake/'):
                return callback(*args, **kwargs)
            entry = record(bottle.request)
            self.fake.requests.append(entry)
            self.fake.counts['total_requests'] += 1
            response = self.respond(callback, args, kwargs)
            entry['status'] = response.status_code
            entry['dropped'] = bool(bottle.request.environ.get('fake.drop'))
            return response
        return wrapper

    def respond(self, callback, args, kwargs):
        try:
            delay = self.fake.delay_for(bottle.request.path)
            if delay:
                gevent.sleep(delay)
            return callback(*args, **kwargs)
        except Exception:  # a bug in the fake: show it in the fake's log
            traceback.print_exc(file=sys.stderr)
            return reply({'errors': [{'message': 'Fake crashed.',
                                      'extensions': {'code': 'INTERNAL_SERVER_ERROR'}}]}, 500)


def graphql_body(request):
    """The request's ``{query, variables, operationName}``, or an error answer."""
    content_type = request.content_type.split(';')[0].strip().lower()
    raw = request.body.read().decode('utf-8', errors='replace')
    if content_type == 'application/graphql':
        return {'query': raw}, None
    if content_type != 'application/json':
        return None, reply({'errors': 'Content-Type must be application/json'}, 415)
    try:
        body = json.loads(raw)
    except ValueError:
        return None, reply({'errors': 'Invalid JSON body'}, 400)
    if not isinstance(body, dict) or not isinstance(body.get('query'), str) \
            or not body['query'].strip():
        return None, reply({'errors': {'query': 'Required parameter missing or invalid'}}, 400)
    if not isinstance(body.get('variables') or {}, dict):
        return None, reply({'errors': [{'message': 'variables must be a JSON object'}]}, 400)
    return body, None


def control_call(action):
    """Run a storefront control action on the JSON body: 404 for an unknown
    order or webhook, 400 ``{error}`` for a body or change it refuses."""
    try:
        data = json.loads(bottle.request.body.read() or b'{}')
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return reply({'error': 'the body must be a JSON object'}, 400)
    try:
        return reply(action(data))
    except LookupError as exc:
        return reply({'error': str(exc)}, 404)
    except (ValueError, TypeError) as exc:
        return reply({'error': str(exc)}, 400)


def create_app():
    """A fresh WSGI app serving one fake shop (see the module docstring)."""
    fake = ShopifyFake()
    app = bottle.Bottle()
    app.install(Pipeline(fake))
    control_routes(app, fake)

    @app.post('/admin/api/<version>/graphql.json')
    def graphql(version):
        if not VERSION.fullmatch(version):
            return reply({'errors': 'Not Found'}, 404)
        request = bottle.request
        if request.headers.get('X-Shopify-Access-Token') != fake.scenario['token']:
            return reply({'errors': INVALID_TOKEN}, 401)
        body, problem = graphql_body(request)
        if problem:
            return problem
        parts = request.urlparts
        status, payload = fake.graphql(version, body, f'{parts.scheme}://{parts.netloc}')
        headers = {'X-Request-Id': secrets.token_hex(8), 'X-Shopify-API-Version': version}
        if status == 429:
            headers['Retry-After'] = '1'
        return reply(payload, status, headers)

    @app.post('/_fake/channel_products')
    def channel_product():
        try:
            data = json.loads(bottle.request.body.read() or b'{}')
            return reply(fake.channel_product(data))
        except (ValueError, KeyError, TypeError) as exc:
            return reply({'error': f'bad channel product: {exc}'}, 400)

    @app.post('/_fake/orders')
    def create_order():
        return control_call(fake.create_order)

    @app.post('/_fake/orders/<number:int>/cancel')
    def cancel_order(number):
        return control_call(lambda data: fake.cancel_order(number, data))

    @app.post('/_fake/orders/<number:int>/update')
    def update_order(number):
        return control_call(lambda data: fake.update_order(number, data))

    @app.post('/_fake/webhooks/redeliver')
    def redeliver():
        return control_call(fake.redeliver)

    @app.route('/_fake_upload/<key>', method=['POST', 'PUT'])
    def upload(key):
        status, text = fake.receive_upload(key, bottle.request)
        return bottle.HTTPResponse(text, status, {'Content-Type': 'application/xml'})

    @app.route('/<path:path>', method='ANY')
    def unknown(path):
        return reply({'errors': 'Not Found'}, 404)

    return droppable(app)


