"""Following forwarded orders: production, shipments, delivery, cancellation.

Once an ``order`` job has made its Printify order, the OrderFollower follows
that order until it is delivered or cancelled: on a schedule
(ORDER_POLL_INTERVAL_MS), and at once when Printify says that something
changed (POST /webhooks/printify). The order job's result says where it
stands, in ``orderStatus``:

    forwarded       Printify has it
    in_production   Printify is printing it
    shipped         a shipment has left (``shipments`` says which items)
    delivered       every shipment has arrived
    cancelled       cancelled in Shopify, and in Printify while it still could be

Each Printify shipment becomes one Shopify fulfilment of the matching
fulfillment order lines, with the carrier, tracking number and URL
(``fulfillmentCreate``; Shopify e-mails the customer when
ORDER_NOTIFY_CUSTOMER). At most once: the Shopify order's fulfilments are
read before each create, and one with the shipment's tracking number counts
as made, so a lost answer or a crash is found at the next poll, not sent
again. Printify's order tells which items have shipped but not in which
parcel; its ``order:shipment:created`` webhook does, and is used when it came.

A Shopify cancellation cancels the Printify order while Printify allows it
(on hold, not yet in production); later, the job says it is too late.

What is followed is kept in DATA_DIR/order-follow.json (ids, SKUs, tracking
numbers and statuses; never a name or an address), written before the order
job is recorded as finished, so a restart resumes following.
"""

import logging
import time

import gevent.pool

from adapters.api import DurableDict, KeyedLocks
from adapters.base import AdapterError

log = logging.getLogger('podengine.shipments')

FOLLOW_DAYS = 120   # an order not delivered by then is no longer followed (a WARNING)
POLL_CONCURRENCY = 4
IN_PRODUCTION = ('sending-to-production', 'in-production')
# Printify's carrier codes -> the names Shopify knows (it links their tracking).
CARRIERS = {'usps': 'USPS', 'ups': 'UPS', 'fedex': 'FedEx', 'dhl': 'DHL Express',
            'dhl-express': 'DHL Express', 'royal-mail': 'Royal Mail',
            'canada-post': 'Canada Post', 'australia-post': 'Australia Post',
            'dpd': 'DPD', 'gls': 'GLS', 'asendia': 'Asendia USA'}

FULFILMENT_QUERY = '''query Fulfilment($id: ID!) {
  order(id: $id) {
    id cancelledAt
    fulfillments(first: 50) { id trackingInfo(first: 10) { number } }
    fulfillmentOrders(first: 3) { nodes { id status
      lineItems(first: 10) { nodes { id sku remainingQuantity } } } }
  }
}'''
# Shopify's charge for the query: at its 50 points a second, a shipment a few seconds
FULFILMENT_COST = 1 + 2 + 2 + 3 * (1 + 2 + 10)
FULFIL = '''mutation Fulfil($fulfillment: FulfillmentInput!) {
  fulfillmentCreate(fulfillment: $fulfillment) {
    fulfillment { id }
    userErrors { field message }
  }
}'''


class OrderFollower:
    """Forwarded orders, followed until they are delivered or cancelled.

    ``desk()`` gives the OrderDesk (the engine's Printify and Shopify clients),
    or None while orders are not the engine's to follow; ``record(job_id,
    changes, message, level)`` merges ``changes`` into the order job's result
    (the engine's: it saves the job and tells its watchers); ``path`` None
    keeps the list in memory only.
    """

    def __init__(self, desk, record, notify_customer=True, path=None, clock=time.time):
        self.desk = desk
        self.record = record
        self.notify_customer = notify_customer
        self.clock = clock
        self._file = DurableDict(path)
        # Printify order id -> {jobId, shopifyOrderId, name, status, since,
        # lines {sku: quantity}, shipments [...], hints {tracking number: skus},
        # cancelWanted}
        self.followed = self._file.items.setdefault('orders', {})
        # Shopify order id -> job id: cancelled before its job had forwarded it
        self.cancels = self._file.items.setdefault('cancels', {})
        self._locks = KeyedLocks()
        self._greenlets = gevent.pool.Group()

    def watch(self, job_id, result):
        """Follow the Printify order of a finished order job (durably)."""
        result = result or {}
        order_id, shopify_id = result.get('printifyOrderId'), result.get('shopifyOrderId')
        cancel = self.cancels.pop(shopify_id, None) is not None
        if result.get('orderStatus') == 'forwarded' and order_id:
            lines = {}
            for line in result.get('lineItems') or []:
                lines[line['sku']] = lines.get(line['sku'], 0) + line['quantity']
            self.followed[str(order_id)] = {
                'jobId': job_id, 'shopifyOrderId': shopify_id,
                'name': result.get('shopifyOrderName'), 'status': 'forwarded',
                'since': self.clock(), 'lines': lines, 'shipments': [], 'hints': {},
                'cancelWanted': cancel}
        elif not cancel:
            return
        self._file.save()
        if cancel and order_id:
            self.spawn(str(order_id))

    def cancel(self, shopify_order_id, job_id, unfinished):
        """A Shopify cancellation; whether it is news. A followed order's
        Printify order is cancelled while Printify allows it; the order of a
        job that has not finished is, once the job has forwarded it (a job
        that starts later reads the cancellation itself)."""
        key = next((key for key, entry in self.followed.items()
                    if entry['shopifyOrderId'] == shopify_order_id), None)
        if key is not None:
            entry = self.followed[key]
            if entry.get('cancelWanted') or entry.get('cancelRefused'):
                return False
            entry['cancelWanted'] = True
        elif unfinished and shopify_order_id not in self.cancels:
            self.cancels[shopify_order_id] = job_id
        else:
            return False
        self._file.save()
        if key is not None:
            self.spawn(key)
        return True

    def printify_event(self, event):
        """A Printify webhook about an order: note which SKUs a shipment holds,
        and look at the order now. Whether the order is followed."""
        resource = event.get('resource') or {}
        key = str(resource.get('id'))
        entry = self.followed.get(key)
        if entry is None:
            return False
        data = resource.get('data') or {}
        number = (data.get('carrier') or {}).get('tracking_number')
        if event.get('type') == 'order:shipment:created' and number and data.get('skus'):
            entry['hints'][str(number)] = [str(sku) for sku in data['skus']]
            self._file.save()
        self.spawn(key)
        return True

    def spawn(self, key):
        self._greenlets.spawn(self.follow, key)

    def poll(self):
        """Look at each followed order once, a few at a time (one waiting for
        Shopify's points must not hold back the others' news)."""
        gevent.pool.Pool(POLL_CONCURRENCY).map(self.follow, list(self.followed))

    def follow(self, key):
        """Look at one followed order; a platform that is down is asked again
        at the next poll."""
        try:
            with self._locks.hold(key):
                if key in self.followed:
                    self._follow(key, self.followed[key])
        except AdapterError as exc:
            log.warning('following Printify order %s: %s', key, exc)
        except Exception:
            log.exception('following Printify order %s failed', key)

    # One order -------------------------------------------------------------

    def _follow(self, key, entry):
        desk = self.desk()
        if desk is None:
            return
        order = read_printify_order(desk, key)
        if entry.get('cancelWanted') and order['status'] != 'canceled':
            if self._cancel(desk, key, entry):
                return
        if order['status'] == 'canceled':
            return self._end(key, entry, 'cancelled', f'Printify order {key} was cancelled',
                             'WARNING')
        if order['status'] in IN_PRODUCTION and entry['status'] == 'forwarded':
            self._change(entry, {'orderStatus': 'in_production'},
                         f'Printify order {key} is in production', status='in_production')
        for parcel in new_parcels(entry, order):
            self._fulfil(desk, key, entry, parcel)
        self._note_deliveries(key, entry, order)
        if key in self.followed and self.clock() - entry['since'] > FOLLOW_DAYS * 86400:
            self._end(key, entry, entry['status'], f'Printify order {key} is no longer '
                      f'followed: not delivered after {FOLLOW_DAYS} days', 'WARNING')

    def _cancel(self, desk, key, entry):
        """Cancel the Printify order; whether it was (else it is too late)."""
        try:
            cancel_printify_order(desk, key)
        except AdapterError as exc:
            if exc.retryable:
                raise  # asked again at the next poll
            entry.update(cancelWanted=False, cancelRefused=True)
            self._change(entry, {'shopifyCancelled': True, 'cancelRefused': str(exc)},
                         f'cancelled in Shopify, but Printify order {key} can no longer be '
                         f'cancelled ({exc}): it will be printed and shipped', 'ERROR')
            return False
        self._end(key, entry, 'cancelled', f'cancelled in Shopify; Printify order {key} '
                  f'cancelled too', 'SUCCESS', shopifyCancelled=True)
        return True

    def _fulfil(self, desk, key, entry, parcel):
        """One Shopify fulfilment with the parcel's tracking (made at most once)."""
        view = read_fulfilments(desk, entry['shopifyOrderId'])
        numbers = [shipment['number'] for shipment in parcel['shipments']]
        made, error = made_fulfilment(view, numbers), None
        lines = fulfilment_lines(view, parcel['skus'])
        if made is None and lines:
            made, error = create_fulfilment(desk, lines, parcel['shipments'],
                                            self.notify_customer)
        elif made is None:
            error = 'Shopify has nothing left to fulfil of these items'
        shipped = [{'carrier': carrier_name(s.get('carrier')), 'trackingNumber': s['number'],
                    'trackingUrl': s.get('url'), 'skus': sorted(parcel['skus']),
                    'shopifyFulfillmentId': made, 'deliveredAt': None} for s in parcel['shipments']]
        entry['shipments'].extend(shipped)
        items = sum(parcel['skus'].values())
        tracking = ', '.join(f'{s["carrier"]} {s["trackingNumber"]}' for s in shipped)
        if error:
            message, level = (f'shipped {items} item(s) ({tracking}); the Shopify fulfilment '
                              f'was not made: {error}. Add the tracking in Shopify'), 'WARNING'
        else:
            message, level = (f'shipped {items} item(s) ({tracking}); Shopify fulfilment '
                              f'{made} made' + (', customer notified' if self.notify_customer
                                                else '')), 'SUCCESS'
        self._change(entry, {'orderStatus': 'shipped', 'shipments': entry['shipments']},
                     message, level, status='shipped')

    def _note_deliveries(self, key, entry, order):
        delivered = {s.get('number'): s.get('delivered_at')
                     for s in order.get('shipments') or [] if s.get('delivered_at')}
        arrived = [s for s in entry['shipments']
                   if s['deliveredAt'] is None and delivered.get(s['trackingNumber'])]
        for shipment in arrived:
            shipment['deliveredAt'] = delivered[shipment['trackingNumber']]
        everything = order['status'] == 'fulfilled' and entry['shipments'] and all(
            s['deliveredAt'] for s in entry['shipments'])
        if everything:
            self._end(key, entry, 'delivered', f'Printify order {key} is delivered', 'SUCCESS')
        elif arrived:
            numbers = ', '.join(s['trackingNumber'] for s in arrived)
            self._change(entry, {'shipments': entry['shipments']}, f'delivered: {numbers}')

    # Recording ---------------------------------------------------------------

    def _change(self, entry, changes, message, level='INFO', status=None):
        """Tell the job first: a crash before the list is saved repeats a look
        (harmless, the fulfilment is read first), never loses a change."""
        self.record(entry['jobId'], changes, f'order {entry["name"]}: {message}', level)
        if status:
            entry['status'] = status
        self._file.save()

    def _end(self, key, entry, status, message, level, **changes):
        self.record(entry['jobId'], {'orderStatus': status, 'shipments': entry['shipments'],
                                     **changes}, f'order {entry["name"]}: {message}', level)
        del self.followed[key]
        self._file.save()


def new_parcels(entry, order):
    """The order's shipments not yet fulfilled in Shopify, as parcels
    ``{shipments, skus: {sku: quantity}}``: one per shipment whose SKUs a
    webhook named, and one for the rest with every other item shipped."""
    known = {shipment['trackingNumber'] for shipment in entry['shipments']}
    new = [s for s in order.get('shipments') or [] if s.get('number') and
           str(s['number']) not in known]
    if not new:
        return []
    before = {sku for shipment in entry['shipments'] for sku in shipment['skus']}
    open_skus = {}
    for item in order.get('line_items') or []:
        sku = (item.get('metadata') or {}).get('sku')
        if item.get('fulfilled_at') and sku and sku not in before:
            open_skus[sku] = open_skus.get(sku, 0) + int(item.get('quantity') or 0)
    parcels, rest = [], []
    for shipment in new:
        shipment = {**shipment, 'number': str(shipment['number'])}
        named = [sku for sku in entry['hints'].get(shipment['number'], []) if sku in open_skus]
        if named:
            parcels.append({'shipments': [shipment],
                            'skus': {sku: open_skus.pop(sku) for sku in named}})
        else:
            rest.append(shipment)
    if rest:
        parcels.append({'shipments': rest, 'skus': open_skus})
    return parcels


def carrier_name(code):
    return CARRIERS.get(str(code or '').lower(), code or 'Other')


# Upstream ---------------------------------------------------------------------

def read_printify_order(desk, order_id):
    shop_id = desk.printify.shop()['id']
    return desk.printify.client.call('GET', f'/shops/{shop_id}/orders/{order_id}.json')


def cancel_printify_order(desk, order_id):
    shop_id = desk.printify.shop()['id']
    desk.printify.client.call('POST', f'/shops/{shop_id}/orders/{order_id}/cancel.json')


def read_fulfilments(desk, shopify_order_id):
    data = desk.shopify.client.graphql(FULFILMENT_QUERY, {'id': shopify_order_id},
                                       cost=FULFILMENT_COST)
    if not data.get('order'):
        raise AdapterError(f'shopify: order {shopify_order_id} does not exist',
                           adapter='shopify', retryable=False)
    return data['order']


def made_fulfilment(view, numbers):
    """The id of the order's fulfilment with one of these tracking numbers, or None."""
    for fulfilment in view.get('fulfillments') or []:
        if any(info.get('number') in numbers for info in fulfilment.get('trackingInfo') or []):
            return fulfilment['id']
    return None


def fulfilment_lines(view, skus):
    """``lineItemsByFulfillmentOrder`` for these quantities of these SKUs, from
    the open fulfillment orders' remaining lines."""
    wanted, by_order = dict(skus), []
    for fulfillment_order in view['fulfillmentOrders']['nodes']:
        if fulfillment_order['status'] not in ('OPEN', 'IN_PROGRESS'):
            continue
        lines = []
        for line in fulfillment_order['lineItems']['nodes']:
            quantity = min(wanted.get(line.get('sku'), 0), line['remainingQuantity'])
            if quantity > 0:
                lines.append({'id': line['id'], 'quantity': quantity})
                wanted[line['sku']] -= quantity
        if lines:
            by_order.append({'fulfillmentOrderId': fulfillment_order['id'],
                             'fulfillmentOrderLineItems': lines})
    return by_order


def create_fulfilment(desk, lines, shipments, notify_customer):
    """(fulfilment id, None), or (None, why Shopify refused). An unclear answer
    raises UnclearAnswer: the next look reads the fulfilments first."""
    tracking = {'company': carrier_name(shipments[0].get('carrier')),
                'numbers': [s['number'] for s in shipments],
                'urls': [s['url'] for s in shipments if s.get('url')]}
    if len(tracking['urls']) != len(tracking['numbers']):
        del tracking['urls']
    data = desk.shopify.client.graphql(FULFIL, {'fulfillment': {
        'lineItemsByFulfillmentOrder': lines, 'notifyCustomer': bool(notify_customer),
        'trackingInfo': tracking}}, once=True)
    payload = data.get('fulfillmentCreate') or {}
    errors = payload.get('userErrors') or []
    if errors or not payload.get('fulfillment'):
        return None, '; '.join(e.get('message', '') for e in errors) or 'no fulfilment made'
    return payload['fulfillment']['id'], None
